"""The ``videofirst`` EncoderSpec's factory: builds the encoder in the backend the run config chose.

``pipeline.encoder.backend`` is validated and resolved by vfeval's core against the spec's ``backends``
(``torch``, ``jax``) before this is called, so ``cfg.backend`` is one of them; each backend's module is
imported only here, so a run in one never imports the other's framework.
"""

from __future__ import annotations

from typing import Any

from vfeval.errors import UsageError
from vfeval_videofirst.config import VideoFirstConfig

BACKENDS = ("torch", "jax")


def make_encoder(config: VideoFirstConfig) -> Any:
    backend = getattr(config, "backend", "") or "torch"
    if backend == "torch":
        from vfeval_videofirst.torch.encoder import make_encoder as make
    elif backend == "jax":
        from vfeval_videofirst.jax.encoder import make_encoder as make
    else:
        raise UsageError(f"videofirst: unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    return make(config)
