"""Run configs: typed dataclasses (OmegaConf structured configs), YAML files and dotlist overrides.

A run config has four sections::

    task:      {name, root, split, ...options of that task}
    pipeline:  {encoder: {name, ...}, aggregator: {name, ...}, sampling: {...}}
    run:       {seed, batch_size, limit, workers, ...}
    output:    {dir, name, cache_dir}

The schema of ``task``, ``pipeline.encoder`` and ``pipeline.aggregator`` is the config dataclass that the
named plugin registered, so a misspelt or mistyped key anywhere is a ``UsageError`` naming the full key and
the nearest valid names.
"""

from __future__ import annotations

import dataclasses
import os
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
from vfeval.specs import Registry


@dataclass
class TaskConfig:
    """Base of every task's config. ``root`` holds the benchmark's files; ``split`` chooses what to score."""

    name: str = MISSING
    root: str = "data"
    split: str = ""


@dataclass
class EncoderConfig:
    """Base of every encoder's config."""

    name: str = MISSING


@dataclass
class AggregatorConfig:
    """Base of every aggregator's config."""

    name: str = "identity"


@dataclass
class SamplingConfig:
    """Which frames of a video window the encoder sees. The one owner of frame counts.

    - ``uniform``: ``num_frames`` frames at the centres of equal spans of the window.
    - ``fps``: ``fps`` frames per second from the start of the window, at most ``max_frames``.
    - ``segments``: if set, the window is cut into segments of this many seconds, each sampled on its own.
    - ``size``: resize so the short side is ``size`` pixels (0 keeps the decoded size); ``crop``: centre
      crop to ``crop`` × ``crop`` (0 for none).
    - ``decoder``: the video decoder backend (``vfeval.video.backends``): ``pyav`` seeks to each wanted
      time; ``pyav-decode-all`` decodes every frame (the slow reference); plugins may register others. Its
      name and version are part of the pipeline fingerprint.
    """

    mode: str = "uniform"
    num_frames: int = 16
    fps: float = 1.0
    max_frames: int = 256
    size: int = 224
    crop: int = 224
    segments: float | None = None
    decoder: str = "pyav"


@dataclass
class PipelineConfig:
    encoder: Any = field(default_factory=EncoderConfig)
    aggregator: Any = field(default_factory=AggregatorConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


@dataclass
class RunOptions:
    seed: int = 0
    batch_size: int = 8
    limit: int | None = None
    """Score only the first N samples: a quick look, recorded in the result (and so not ranked)."""
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

    def __post_init__(self) -> None:
        modes = ("auto", "process", "thread", "inline")
        if self.decode not in modes:
            raise UsageError(f"config: bad value for 'run.decode': {self.decode!r}; use {', '.join(modes)}")
        for key in ("workers", "prefetch"):
            if getattr(self, key) < 0:
                raise UsageError(f"config: bad value for 'run.{key}': {getattr(self, key)}; it must be >= 0")
        if not self.video_timeout > 0:
            raise UsageError(f"config: bad value for 'run.video_timeout': {self.video_timeout}; it must be > 0")


@dataclass
class OutputConfig:
    dir: str = "runs"
    name: str = ""
    """The run's folder under ``dir``; empty means ``<task>-<split>-<encoder>-<aggregator>``."""
    cache_dir: str = "${oc.env:VFEVAL_CACHE,.vfeval_cache}"


@dataclass
class RunConfig:
    task: Any = field(default_factory=TaskConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    run: RunOptions = field(default_factory=RunOptions)
    output: OutputConfig = field(default_factory=OutputConfig)

    def run_name(self) -> str:
        if self.output.name:
            return self.output.name
        parts = [self.task.name, self.task.split, self.pipeline.encoder.name, self.pipeline.aggregator.name]
        return "-".join(p for p in parts if p)

    def run_dir(self) -> Path:
        return Path(self.output.dir) / self.run_name()


def _describe(exc: OmegaConfBaseException, schema: DictConfig | None = None) -> str:
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
        return f"config: cannot resolve {key!r}: {str(exc).splitlines()[0]}"
    if isinstance(exc, ValidationError):
        return f"config: bad value for {key!r}: {str(exc).splitlines()[0]}"
    return f"config: {key}: {str(exc).splitlines()[0]}"


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
            raise UsageError(f"config file {p} is not valid YAML: {str(exc).splitlines()[0]}") from exc
        if not isinstance(base, DictConfig):
            raise UsageError(f"config file {p} must hold a mapping with task, pipeline, run and output")
    for item in overrides:
        if "=" not in item:
            raise UsageError(f"override {item!r} must look like key=value (e.g. task.root=/data/egoschema)")
    try:
        return OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        raise UsageError(_describe(exc)) from exc


def _name_at(raw: DictConfig, key: str, default: str | None = None) -> str:
    value = OmegaConf.select(raw, key, default=default)
    if value is None:
        raise UsageError(f"config: missing value for {key!r}; `vfeval ls` lists the names")
    return str(value)


def build_run_config(raw: DictConfig, registry: Registry) -> RunConfig:
    """Validate a raw config against the schemas of the plugins it names and return typed objects."""
    task_spec = registry.get("tasks", _name_at(raw, "task.name"))
    enc_spec = registry.get("encoders", _name_at(raw, "pipeline.encoder.name"))
    agg_spec = registry.get("aggregators", _name_at(raw, "pipeline.aggregator.name", "identity"))
    schema = OmegaConf.structured(
        RunConfig(
            task=(task_spec.config or TaskConfig)(),
            pipeline=PipelineConfig(
                encoder=(enc_spec.config or EncoderConfig)(),
                aggregator=(agg_spec.config or AggregatorConfig)(),
            ),
        )
    )
    try:
        merged = OmegaConf.merge(schema, raw)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise UsageError(_describe(exc, schema)) from exc
    assert isinstance(cfg, RunConfig)
    from vfeval.video.sampling import validate

    validate(cfg.pipeline.sampling)
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
    return build_run_config(OmegaConf.create(data), registry)


def load_trainer_config(
    path: str | os.PathLike, overrides: list[str], registry: Registry
) -> tuple[Any, Any]:
    """(TrainerSpec, typed config) for ``vfeval train``: the YAML's ``trainer`` key names the recipe."""
    raw = load_raw(path, overrides)
    spec = registry.get("trainers", _name_at(raw, "trainer"))
    if spec.config is None:
        return spec, raw
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(spec.config), raw))
    except OmegaConfBaseException as exc:
        raise UsageError(_describe(exc, OmegaConf.structured(spec.config))) from exc
    return spec, cfg
