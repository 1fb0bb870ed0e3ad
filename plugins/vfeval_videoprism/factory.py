"""``videoprism``'s factory: the backend the run chose (``pipeline.encoder.backend``) builds the encoder."""

from __future__ import annotations

from vfeval.errors import UsageError
from vfeval_videoprism.base import VideoPrismEncoder, check_config
from vfeval_videoprism.config import VideoPrismConfig


def make_encoder(cfg: VideoPrismConfig) -> VideoPrismEncoder:
    check_config(cfg)
    if cfg.backend == "jax":
        from vfeval_videoprism.jax.encoder import make_encoder as make
    elif cfg.backend in ("torch", ""):
        from vfeval_videoprism.torch.encoder import make_encoder as make
    else:
        raise UsageError(f"config: bad value for 'pipeline.encoder.backend': {cfg.backend!r}; videoprism runs on "
                         "torch or jax")
    return make(cfg)
