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


@dataclass(frozen=True)
class AggregatorSpec(_Spec):
    """Turns a video's per-segment encoder outputs into answers to requests."""

    kinds: tuple[str, ...] = ("video_embedding", "text_embedding", "choice_scores")
    """The request kinds this aggregator can answer (given an encoder with the capabilities it needs)."""


@dataclass(frozen=True)
class TrainerSpec(_Spec):
    """A training recipe run by ``vfeval train``."""


@dataclass
class Registry:
    """Everything the installed plugins registered, by kind and name."""

    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    encoders: dict[str, EncoderSpec] = field(default_factory=dict)
    aggregators: dict[str, AggregatorSpec] = field(default_factory=dict)
    trainers: dict[str, TrainerSpec] = field(default_factory=dict)

    def table(self, kind: str) -> dict[str, _Spec]:
        return getattr(self, kind)

    def get(self, kind: str, name: str) -> Any:
        """The spec called `name` of `kind` ('tasks', 'encoders', ...), or a UsageError naming near misses."""
        from vfeval.errors import suggest

        table = self.table(kind)
        if name not in table:
            singular = kind[:-1]
            raise UsageError(f"unknown {singular} {name!r}{suggest(name, table)}; `vfeval ls {kind}` lists them")
        return table[name]
