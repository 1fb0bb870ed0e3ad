"""The ``vimpac`` EncoderSpec's factory: the encoder in the backend the run config chose (only its module imported)."""

from __future__ import annotations

from typing import Any

from vfeval_vimpac.config import VimpacConfig


def make_encoder(config: VimpacConfig) -> Any:
    if (getattr(config, "backend", "") or "torch") == "jax":
        from vfeval_vimpac.jax.encoder import make_encoder as make
    else:
        from vfeval_vimpac.torch.encoder import make_encoder as make
    return make(config)
