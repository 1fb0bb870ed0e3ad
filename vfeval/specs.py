"""Typed specs that plugins register, each pointing at a lazy ``"module:callable"`` factory.

Nothing heavy is imported while specs are registered: the factory string is resolved only when a spec is
used (``spec.load()``), so `vfeval ls` and `vfeval --help` never import torch or jax.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vfeval.errors import UsageError

REQUEST_KINDS = ("video_embedding", "text_embedding", "choice_scores", "generate")


def resolve(target: str | Callable[..., Any]) -> Callable[..., Any]:
    """Import ``"package.module:attr"`` and return the attribute (callables pass through)."""
    if callable(target):
        return target
    module_name, _, attr = target.partition(":")
    if not attr:
        raise UsageError(f"factory {target!r} must look like 'package.module:callable'")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise UsageError(f"factory {target!r}: module {module_name!r} has no attribute {attr!r}") from exc


@dataclass(frozen=True)
class _Spec:
    name: str
    factory: str | Callable[..., Any]
    """``"module:callable"`` called with the validated config object; returns the component."""
    config: type | None = None
    """A dataclass of the component's options (an OmegaConf structured config); None for no options."""
    description: str = ""
    plugin: str = ""
    """Filled in by the host: the plugin that registered this spec."""

    def load(self) -> Callable[..., Any]:
        return resolve(self.factory)


@dataclass(frozen=True)
class TaskSpec(_Spec):
    """A benchmark task: builds samples, emits requests, scores answers."""

    version: str = "1"
    splits: tuple[str, ...] = ()


@dataclass(frozen=True)
class EncoderSpec(_Spec):
    """A model that turns clips into embeddings, texts into embeddings, or clips into words."""

    backends: tuple[str, ...] = ("numpy",)
    capabilities: tuple[str, ...] = ("embed_video",)
    """Any of ``embed_video``, ``embed_text``, ``describe``."""
    family: str = "other"
    """The leaderboard family its pipelines belong to: ``video-first``, ``image-first``, ``baseline`` (not
    learned), or ``other``. Written into each result as ``pipeline.family``; an aggregator may override it."""


@dataclass(frozen=True)
class AggregatorSpec(_Spec):
    """Turns a video's per-segment encoder outputs into answers to requests."""

    kinds: tuple[str, ...] = ("video_embedding", "text_embedding", "choice_scores")
    """The request kinds this aggregator can answer (given an encoder with the capabilities it needs)."""
    family: str | None = None
    """Overrides the encoder's family for every pipeline this aggregator ends (``baseline`` for aggregators
    that ignore what the encoder saw, ``llm-over-segments`` for an LLM reading segment captions); None keeps
    the encoder's."""


@dataclass(frozen=True)
class TrainerSpec(_Spec):
    """A training recipe run by ``vfeval train``."""


@dataclass(frozen=True)
class DecoderSpec(_Spec):
    """A video decoder: reads the frames a ``SamplingConfig`` chooses from a ``VideoWindow``.

    ``factory`` must be a ``"module:callable"`` string (decoding worker processes import it themselves); it is
    called with one keyword, ``threads`` (how many threads it may decode with; 0 for its own choice), and
    returns a ``vfeval.video.backends.VideoBackend``. ``config`` is unused: a decoder has no options."""

    def __post_init__(self) -> None:
        if not isinstance(self.factory, str) or ":" not in self.factory:
            raise UsageError(
                f"decoder {self.name!r}: factory {self.factory!r} must be a 'package.module:callable' string "
                "(worker processes import it by name)"
            )


@dataclass
class Registry:
    """Everything the installed plugins registered, by kind and name.

    A name that several plugins registered is *contested*: it is left out of its table, and asking for it is
    an error naming every plugin that registered it; every other name works. ``failed`` holds the plugins
    that failed to load (or whose hook raised), so that asking for a name that one of them might have
    registered says so instead of only "unknown".
    """

    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    encoders: dict[str, EncoderSpec] = field(default_factory=dict)
    aggregators: dict[str, AggregatorSpec] = field(default_factory=dict)
    trainers: dict[str, TrainerSpec] = field(default_factory=dict)
    decoders: dict[str, DecoderSpec] = field(default_factory=dict)
    contested: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    """``(kind, name) -> (plugin, plugin, ...)`` for names registered by more than one plugin."""
    failed: dict[str, str] = field(default_factory=dict)
    """``plugin name -> error`` for plugins that failed to load or whose registration hook raised."""

    def table(self, kind: str) -> dict[str, _Spec]:
        return getattr(self, kind)

    def add(self, kind: str, spec: _Spec) -> None:
        """Record ``spec`` (with ``spec.plugin`` set); a name another plugin already holds becomes contested.
        A plugin that registers one name twice gets a ``UsageError`` (reported as that plugin's failure)."""
        table = self.table(kind)
        key = (kind, spec.name)
        if key in self.contested:
            if spec.plugin not in self.contested[key]:
                self.contested[key] = (*self.contested[key], spec.plugin)
        elif spec.name in table:
            if table[spec.name].plugin == spec.plugin:
                raise UsageError(f"plugin {spec.plugin!r} registers {kind[:-1]} {spec.name!r} twice")
            self.contested[key] = (table.pop(spec.name).plugin, spec.plugin)
        else:
            table[spec.name] = spec

    def conflict_message(self, kind: str, name: str) -> str:
        plugins = " and ".join(f"plugin {p!r}" for p in sorted(self.contested[(kind, name)]))
        return (
            f"{kind[:-1]} {name!r} is registered by both {plugins}, so it cannot be used; uninstall one of "
            "them or leave one out of VFEVAL_PLUGINS"
        )

    def get(self, kind: str, name: str) -> Any:
        """The spec called `name` of `kind` ('tasks', 'encoders', ...), or a UsageError naming near misses,
        the plugins that contest the name, or the plugins that failed to load."""
        from vfeval.errors import suggest

        table = self.table(kind)
        if (kind, name) in self.contested:
            raise UsageError(self.conflict_message(kind, name))
        if name not in table:
            singular = kind[:-1]
            failed = ""
            if self.failed:
                errors = "; ".join(f"plugin {p!r} failed: {e}" for p, e in sorted(self.failed.items()))
                failed = f"; it may come from a plugin that failed to load ({errors}; `vfeval plugins` shows why)"
            raise UsageError(
                f"unknown {singular} {name!r}{suggest(name, table)}; `vfeval ls {kind}` lists them{failed}"
            )
        return table[name]
