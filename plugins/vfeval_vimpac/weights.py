"""Where a VIMPAC encoder's weights come from, the same for both backends (numpy only).

``init=checkpoint``: the trained file names everything (transformer, tokenizer, architecture); its
sha256 identifies the weights. ``init=random``: the configured architecture with weights drawn from
``seed`` and the ``tokenizer`` file; the identity says so (the untrained baseline of the same encoder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vfeval.errors import UsageError
from vfeval.hashing import sha256_file
from vfeval_vimpac import checkpoint, tokenizer
from vfeval_vimpac.config import VimpacConfig, validate_model


def resolve(cfg: VimpacConfig) -> tuple[VimpacConfig, dict[str, np.ndarray] | None, tuple[str, dict[str, np.ndarray]], str]:
    """``(config with the architecture to build, trained arrays or None, (tokenizer kind, arrays), weights id)``."""
    validate_model(cfg)
    if cfg.init == "checkpoint":
        if not cfg.checkpoint:
            raise UsageError(
                "vimpac: 'checkpoint' is empty; name a .safetensors file written by the vimpac trainer "
                "(or set init=random for the untrained baseline)"
            )
        meta, arrays, tok = checkpoint.read(cfg.checkpoint)
        return checkpoint.configured(cfg, meta), arrays, tok, f"sha256:{sha256_file(Path(cfg.checkpoint)).hexdigest()}"
    if cfg.checkpoint:
        raise UsageError("vimpac: init=random draws the weights; leave 'checkpoint' empty or set init=checkpoint")
    if not cfg.tokenizer:
        raise UsageError("vimpac: init=random needs 'tokenizer', a tokenizer .safetensors file")
    kind, arrays_, _ = tokenizer.load(cfg.tokenizer)
    ident = f"random:seed={cfg.seed}:tokenizer=sha256:{sha256_file(Path(cfg.tokenizer)).hexdigest()}"
    return cfg, None, (kind, arrays_), ident


def check_clip(clip: Any) -> None:
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise UsageError(f"vimpac: a clip must be uint8 [T, H, W, 3], got shape {tuple(clip.shape)}")
