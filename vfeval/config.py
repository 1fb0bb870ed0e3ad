"""Run configs: typed dataclasses (OmegaConf structured configs), YAML files and dotlist overrides.

A run config has four sections::

    task:      {name, root, split, ...options of that task}
    pipeline:  {encoder: {name, backend, ...}, aggregator: {name, ...}, sampling: {...}}
    run:       {seed, batch_size, limit, workers, ...}
    output:    {dir, name, cache_dir}

The schema of ``task``, ``pipeline.encoder`` and ``pipeline.aggregator`` is the config dataclass that the
named plugin registered, so a misspelt or mistyped key anywhere is a ``UsageError`` naming the full key and
the nearest valid names. Values that cannot work (a batch of 0 videos, a negative limit, a million frames)
are refused by the dataclasses themselves when the config is built, before anything is computed.

This module owns the sampling config and its validation; ``vfeval.video.sampling`` computes frame times
from it. It imports no other part of ``vfeval.video`` at module level.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from vfeval.errors import UsageError, suggest
from vfeval.specs import EncoderSpec, Registry

FRAMEWORKS: dict[str, tuple[str, str]] = {
    "torch": ("torch", 'pip install "vfeval[torch]"'),
    "jax": ("jax", 'pip install "vfeval[jax]"'),
}
"""Backend name -> (the module that must be importable, the command that installs it). A backend not listed
here (``numpy``...) needs nothing beyond vfeval's own dependencies."""


@dataclass
class TaskConfig:
    """Base of every task's config. ``root`` holds the benchmark's files; ``split`` chooses what to score."""

    name: str = MISSING
    root: str = "data"
    split: str = ""


@dataclass
class EncoderConfig:
    """Base of every encoder's config.

    ``backend`` is the framework the encoder runs on, one of its ``EncoderSpec.backends``; empty (or absent
    from the YAML) chooses the first of them. It is validated, resolved and set here before the factory
    sees the config, so a factory reads ``cfg.backend`` and never gets an empty one.
    """

    name: str = MISSING
    backend: str = ""


@dataclass
class AggregatorConfig:
    """Base of every aggregator's config."""

    name: str = "identity"


SAMPLING_MODES = ("uniform", "fps")


@dataclass
class SamplingConfig:
    """Which frames of a video window the encoder sees. The one owner of frame counts.

    - ``uniform``: ``num_frames`` frames at the centres of equal spans of the window.
    - ``fps``: ``fps`` frames per second from the start of the window, at most ``max_frames``.
    - ``segments``: if set, the window is cut into segments of this many seconds, each sampled on its own.
    - ``size``: resize so the short side is ``size`` pixels (0 keeps the decoded size); ``crop``: centre
      crop to ``crop`` × ``crop`` (0 for none).
    - ``decoder``: the video decoder, a ``DecoderSpec`` that a plugin registered (``vfeval.video.backends``):
      ``pyav`` seeks to each wanted time; ``pyav-decode-all`` decodes every frame (the slow reference). Its
      name and version are part of the pipeline fingerprint.

    Values that cannot work are refused when the object is made; the upper bounds that protect memory
    (``run.frame_limit``, ``run.size_limit``) are checked by ``RunConfig``, which holds both sections.
    """

    mode: str = "uniform"
    num_frames: int = 16
    fps: float = 1.0
    max_frames: int = 256
    size: int = 224
    crop: int = 224
    segments: float | None = None
    decoder: str = "pyav"

    def __post_init__(self) -> None:
        validate_sampling(self)

    def frames_per_segment(self) -> int:
        """The most frames one segment (or the whole window, without segments) is sampled at."""
        return self.num_frames if self.mode == "uniform" else self.max_frames


def validate_sampling(sampling: SamplingConfig, registry: Registry | None = None) -> None:
    """Raise ``UsageError`` naming the ``pipeline.sampling`` key whose value cannot work.

    With a ``registry``, the decoder must be one it holds: that check is
    ``vfeval.video.backends.decoder_spec(name, registry)``, imported when called (the decoders import
    nothing of this module). Without one (a worker process, the reader) the decoder is not checked."""
    key = "config: bad value for 'pipeline.sampling."
    if sampling.mode not in SAMPLING_MODES:
        raise UsageError(f"{key}mode': {sampling.mode!r}; use uniform or fps")
    if sampling.mode == "uniform" and sampling.num_frames < 1:
        raise UsageError(f"{key}num_frames': {sampling.num_frames}; it must be at least 1")
    if sampling.mode == "fps" and not (sampling.fps > 0 and math.isfinite(sampling.fps)):
        raise UsageError(f"{key}fps': {sampling.fps}; it must be a positive number")
    if sampling.mode == "fps" and sampling.max_frames < 1:
        raise UsageError(f"{key}max_frames': {sampling.max_frames}; it must be at least 1")
    if sampling.size < 0 or sampling.crop < 0:
        raise UsageError(f"{key}size' / 'crop': {sampling.size} / {sampling.crop}; use 0 (off) or a size")
    if sampling.size and sampling.crop > sampling.size:
        raise UsageError(f"{key}crop': {sampling.crop} is larger than size {sampling.size}")
    if sampling.segments is not None and not (sampling.segments > 0 and math.isfinite(sampling.segments)):
        raise UsageError(f"{key}segments': {sampling.segments}; use a positive length in seconds or null")
    if registry is not None:
        from vfeval.video.backends import decoder_spec

        decoder_spec(sampling.decoder, registry)


@dataclass
class PipelineConfig:
    encoder: Any = field(default_factory=EncoderConfig)
    aggregator: Any = field(default_factory=AggregatorConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


def _at_least(section: str, key: str, value: Any, low: float) -> None:
    if value < low:
        raise UsageError(f"config: bad value for '{section}.{key}': {value}; it must be at least {low}")


@dataclass
class RunOptions:
    seed: int = 0
    batch_size: int = 8
    """Requests answered per pipeline call; at least 1."""
    limit: int | None = None
    """Score only the first N samples (N >= 1): a quick look, recorded in the result (and so not ranked)."""
    decode: str = "auto"
    """Where videos are decoded while the encoder works on the previous batch:

    - ``process``: a pool of ``workers`` fresh Python processes (never forked from this one, which may hold
      torch threads). A video that takes longer than ``video_timeout`` has its process killed and replaced.
    - ``thread``: ``workers`` threads in this process; no start-up cost, but a hung decode can only be
      abandoned (its thread stays blocked), not stopped.
    - ``inline``: one video after another in this process, no overlap and no timeout: for debugging.
    - ``auto`` (the default): ``process`` when at least 64 videos are to be decoded, else ``thread``,
      whose start-up costs nothing for small runs and tests.
    """
    workers: int = 0
    """Decoding processes or threads; 0 chooses from the machine's cores: one per core but one (which the
    encoder keeps), at least 1 and at most 16."""
    prefetch: int = 2
    """Batches decoded ahead of the batch being encoded; more if needed to give every decoding worker two
    windows. Frames of at most that many batches, plus the one being encoded, are held at once."""
    video_timeout: float = 120.0
    """Seconds one video may take to decode (from when a worker starts on it) before it becomes a failed
    sample ``timeout: ...``. Enforced by ``process`` and ``thread`` decoding, not by ``inline``."""
    retry_failed: bool = False
    """Decode videos that failed in an earlier run of the same pipeline again."""
    frame_limit: int = 4096
    """The most frames one segment may be sampled at (``pipeline.sampling.num_frames``, or ``max_frames``
    with ``fps``): a guard against a typo that would allocate gigabytes per video (4096 frames at 224 pixels
    are 600 MB). Raise it knowingly; it is not part of any fingerprint."""
    size_limit: int = 4096
    """The largest ``pipeline.sampling.size`` and ``crop``, in pixels; the same kind of guard."""

    def __post_init__(self) -> None:
        modes = ("auto", "process", "thread", "inline")
        if self.decode not in modes:
            raise UsageError(f"config: bad value for 'run.decode': {self.decode!r}; use {', '.join(modes)}")
        _at_least("run", "batch_size", self.batch_size, 1)
        if self.limit is not None:
            _at_least("run", "limit", self.limit, 1)
        for key in ("workers", "prefetch"):
            _at_least("run", key, getattr(self, key), 0)
        for key in ("frame_limit", "size_limit"):
            _at_least("run", key, getattr(self, key), 1)
        if not (self.video_timeout > 0 and math.isfinite(self.video_timeout)):
            raise UsageError(f"config: bad value for 'run.video_timeout': {self.video_timeout}; it must be > 0")


_RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+=@,-]*")


def check_run_name(name: str, where: str = "--name") -> str:
    """``name`` if it is one plain folder name (letters, digits, ``. _ - + = @ ,``; no separators, no
    interpolation, not starting with a dot); else a ``UsageError`` naming ``where``."""
    if not _RUN_NAME.fullmatch(name) or len(name) > 200:
        raise UsageError(
            f"{where} {name!r} is not a run name: use one folder name of letters, digits and . _ - + = @ , "
            "(no '/', no '${...}', not starting with '.'; at most 200 characters)"
        )
    return name


@dataclass
class OutputConfig:
    dir: str = "runs"
    name: str = ""
    """The run's folder under ``dir``, a plain name; empty means ``<task>-<split>-<encoder>-<aggregator>``."""
    cache_dir: str = "${oc.env:VFEVAL_CACHE,.vfeval_cache}"

    def __post_init__(self) -> None:
        if self.name:
            check_run_name(self.name, "config: bad value for 'output.name':")


@dataclass
class RunConfig:
    task: Any = field(default_factory=TaskConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    run: RunOptions = field(default_factory=RunOptions)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        sampling, run = self.pipeline.sampling, self.run
        if not isinstance(sampling, SamplingConfig) or not isinstance(run, RunOptions):
            return  # still an OmegaConf node: checked when the typed object is made
        frames_key = "num_frames" if sampling.mode == "uniform" else "max_frames"
        if sampling.frames_per_segment() > run.frame_limit:
            raise UsageError(
                f"config: bad value for 'pipeline.sampling.{frames_key}': {sampling.frames_per_segment()} is "
                f"above run.frame_limit={run.frame_limit}; set run.frame_limit higher if you mean it"
            )
        for key in ("size", "crop"):
            if getattr(sampling, key) > run.size_limit:
                raise UsageError(
                    f"config: bad value for 'pipeline.sampling.{key}': {getattr(sampling, key)} pixels is above "
                    f"run.size_limit={run.size_limit}; set run.size_limit higher if you mean it"
                )

    def run_name(self) -> str:
        if self.output.name:
            return self.output.name
        parts = [self.task.name, self.task.split, self.pipeline.encoder.name, self.pipeline.aggregator.name]
        return "-".join(p for p in parts if p)

    def run_dir(self) -> Path:
        return Path(self.output.dir) / self.run_name()


def describe(exc: OmegaConfBaseException, schema: DictConfig | None = None) -> str:
    """One line for an OmegaConf error: the full key, what is wrong, and the nearest valid keys."""
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None) or "?"
    if isinstance(exc, ConfigKeyError):
        parent, _, leaf = str(key).rpartition(".")
        valid: list[str] = []
        if schema is not None:
            node = OmegaConf.select(schema, parent) if parent else schema
            if isinstance(node, DictConfig):
                valid = [str(k) for k in node.keys()]
        return f"config: unknown key {key!r}{suggest(leaf, valid)}"
    if isinstance(exc, MissingMandatoryValue):
        return f"config: missing value for {key!r}; set it in the YAML or as {key}=..."
    if isinstance(exc, InterpolationResolutionError):
        return f"config: cannot resolve {key!r}: {_first_line(exc)}"
    if isinstance(exc, ValidationError):
        return f"config: bad value for {key!r}: {_first_line(exc)}"
    return f"config: {key}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> DictConfig:
    """``key=value`` strings as one config; a malformed one (no ``=``, a stray quote) is a ``UsageError``
    naming it. Values are parsed as YAML scalars, as OmegaConf's dotlists are."""
    merged = OmegaConf.create({})
    for item in overrides:
        if "=" not in item:
            raise UsageError(f"override {item!r} must look like key=value (e.g. task.root=/data/egoschema)")
        try:
            node = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as exc:
            raise UsageError(f"override {item!r}: {describe(exc)}") from exc
        except Exception as exc:  # the YAML parser's errors: an unclosed quote or bracket
            raise UsageError(
                f"override {item!r}: its value is not valid YAML ({_first_line(exc)}); "
                "quote the whole value, e.g. key='a b'"
            ) from exc
        try:
            merged = OmegaConf.merge(merged, node)
        except OmegaConfBaseException as exc:
            raise UsageError(f"override {item!r}: {describe(exc)}") from exc
    return merged


def load_raw(path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The YAML file (if any) with dotlist overrides applied, not yet validated."""
    base = OmegaConf.create({})
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UsageError(f"config file not found: {p}")
        try:
            base = OmegaConf.load(p)
        except Exception as exc:
            raise UsageError(f"config file {p} is not valid YAML: {_first_line(exc)}") from exc
        if not isinstance(base, DictConfig):
            raise UsageError(f"config file {p} must hold a mapping with task, pipeline, run and output")
    extra = parse_overrides(overrides)
    try:
        return OmegaConf.merge(base, extra)
    except OmegaConfBaseException as exc:
        raise UsageError(describe(exc)) from exc


def _name_at(raw: DictConfig, key: str, default: str | None = None) -> str:
    try:
        value = OmegaConf.select(raw, key, default=default)
    except OmegaConfBaseException as exc:
        raise UsageError(describe(exc)) from exc
    if value is None:
        raise UsageError(f"config: missing value for {key!r}; `vfeval ls` lists the names")
    if OmegaConf.is_config(value):
        raise UsageError(f"config: bad value for {key!r}: it must be a name, not a mapping or a list")
    return str(value)


def resolve_backend(spec: EncoderSpec, requested: str | None) -> str:
    """The backend a run uses: ``requested`` (``pipeline.encoder.backend``) or the spec's first one.

    A backend the encoder does not implement, or one whose framework is not installed, is a ``UsageError``
    naming the backends available and the command that installs the missing framework."""
    offered = tuple(spec.backends)
    if not offered:
        raise UsageError(f"encoder {spec.name!r} (plugin {spec.plugin!r}) declares no backends")
    backend = requested or offered[0]
    if backend not in offered:
        raise UsageError(
            f"config: bad value for 'pipeline.encoder.backend': {backend!r}; encoder {spec.name!r} runs on "
            f"{', '.join(offered)}"
        )
    module, install = FRAMEWORKS.get(backend, ("", ""))
    if module and importlib.util.find_spec(module) is None:
        others = [b for b in offered if b != backend]
        also = f" (encoder {spec.name!r} also runs on {', '.join(others)})" if others else ""
        raise UsageError(
            f"config: 'pipeline.encoder.backend' is {backend!r}, but {module} is not installed: {install}{also}"
        )
    return backend


def _has_field(cls: type, name: str) -> bool:
    return dataclasses.is_dataclass(cls) and any(f.name == name for f in dataclasses.fields(cls))


def build_run_config(raw: DictConfig, registry: Registry) -> RunConfig:
    """Validate a raw config against the schemas of the plugins it names and return typed objects."""
    task_spec = registry.get("tasks", _name_at(raw, "task.name"))
    enc_spec = registry.get("encoders", _name_at(raw, "pipeline.encoder.name"))
    agg_spec = registry.get("aggregators", _name_at(raw, "pipeline.aggregator.name", "identity"))
    enc_cls = enc_spec.config or EncoderConfig
    try:
        requested = OmegaConf.select(raw, "pipeline.encoder.backend", default=None)
    except OmegaConfBaseException as exc:
        raise UsageError(describe(exc)) from exc
    backend = resolve_backend(enc_spec, None if requested in (None, "") else str(requested))
    raw = raw.copy()
    if _has_field(enc_cls, "backend"):
        OmegaConf.update(raw, "pipeline.encoder.backend", backend, force_add=True)
    elif requested is not None:
        del raw.pipeline.encoder["backend"]  # accepted as validated metadata, set on the object below
    schema = OmegaConf.structured(
        RunConfig(
            task=(task_spec.config or TaskConfig)(),
            pipeline=PipelineConfig(encoder=enc_cls(), aggregator=(agg_spec.config or AggregatorConfig)()),
        )
    )
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(schema, raw))
    except OmegaConfBaseException as exc:  # a dataclass's own check (a UsageError) passes straight through
        raise UsageError(describe(exc, schema)) from exc
    assert isinstance(cfg, RunConfig)
    if not _has_field(enc_cls, "backend"):
        object.__setattr__(cfg.pipeline.encoder, "backend", backend)
    validate_sampling(cfg.pipeline.sampling, registry)
    if task_spec.splits and cfg.task.split not in task_spec.splits:
        raise UsageError(
            f"config: bad value for 'task.split': {cfg.task.split!r}; task {task_spec.name!r} has splits "
            f"{', '.join(task_spec.splits)}"
        )
    return cfg


def load_run_config(
    path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...], registry: Registry
) -> RunConfig:
    return build_run_config(load_raw(path, overrides), registry)


def check_folder(path: str | os.PathLike, what: str) -> Path:
    """``path`` if it is, or can be made, a writable folder; else a ``UsageError`` starting with ``what``
    (the config key or option that named it).

    Nothing is created: this is checked before a run computes anything, so that a misplaced output folder is
    found in a second, not after every answer has been computed."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{what}: {p} is a file, not a folder; point it at a folder")
    probe = p
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UsageError(f"{what}: {p} cannot be made a folder, because {probe} is a file")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        detail = "is not writable" if probe == p else f"cannot be created: {probe} is not writable"
        raise UsageError(f"{what}: {p} {detail}; choose another folder")
    return p


def check_paths(cfg: RunConfig) -> None:
    """The run's output folder and cache folder can be written (see ``check_folder``)."""
    check_folder(cfg.output.dir, "config: 'output.dir'")
    check_folder(cfg.run_dir(), "config: 'output.dir' / 'output.name'")
    check_folder(cfg.output.cache_dir, "config: 'output.cache_dir' (or $VFEVAL_CACHE)")


def to_dict(obj: Any) -> Any:
    """A config object as plain JSON-able data (for results and fingerprints)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def from_dict(data: dict[str, Any], registry: Registry) -> RunConfig:
    """Rebuild a RunConfig from ``to_dict`` output (as saved in results.json)."""
    if not isinstance(data, dict):
        raise UsageError(f"a saved run config must be a mapping, not {type(data).__name__}")
    try:
        raw = OmegaConf.create(data)
    except OmegaConfBaseException as exc:
        raise UsageError(f"the saved run config cannot be read: {_first_line(exc)}") from exc
    return build_run_config(raw, registry)


def load_trainer_config(
    path: str | os.PathLike, overrides: list[str], registry: Registry
) -> tuple[Any, Any]:
    """(TrainerSpec, typed config) for ``vfeval train``: the YAML's ``trainer`` key names the recipe."""
    raw = load_raw(path, overrides)
    spec = registry.get("trainers", _name_at(raw, "trainer"))
    if spec.config is None:
        return spec, raw
    schema = OmegaConf.structured(spec.config)
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(schema, raw))
    except OmegaConfBaseException as exc:
        raise UsageError(describe(exc, schema)) from exc
    except UsageError as exc:  # a dataclass's own check; a sampling config names its run-config key
        paths = _paths_of(schema, SamplingConfig)
        message = str(exc)
        if len(paths) == 1 and "'pipeline.sampling." in message:
            raise UsageError(message.replace("'pipeline.sampling.", f"'{paths[0]}.")) from None
        raise
    return spec, cfg


def _paths_of(node: DictConfig, cls: type, prefix: str = "") -> list[str]:
    """Dotted keys of every structured node of type ``cls`` in ``node``."""
    found = []
    for key in node.keys():
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            path = f"{prefix}{key}"
            if OmegaConf.get_type(child) is cls:
                found.append(path)
            else:
                found.extend(_paths_of(child, cls, path + "."))
    return found
