"""The ``vimpac`` encoder in JAX: the twin of ``torch/encoder.py`` (same checkpoint, same features)."""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import numpy as np
from flax import nnx
from vfeval_videofirst.jax.model import load_arrays

from vfeval.errors import UsageError
from vfeval.pipeline import Encoder
from vfeval_vimpac import weights
from vfeval_vimpac.config import VimpacConfig
from vfeval_vimpac.jax.tokenizer import Tokenizer
from vfeval_vimpac.jax.train import build_model


@partial(jax.jit, static_argnums=(0, 3))
def _embed(graphdef: Any, state: Any, codes: jax.Array, pool: str) -> jax.Array:
    return nnx.merge(graphdef, state).embed(codes, pool)


class JaxVimpacEncoder(Encoder):
    def __init__(self, cfg: VimpacConfig) -> None:
        if cfg.device == "cuda" and not any(d.platform == "gpu" for d in jax.devices()):
            raise UsageError("vimpac: device is 'cuda' but JAX sees no GPU; set device=cpu or auto")
        cfg, arrays, (kind, tok_arrays), self.weights = weights.resolve(cfg)
        self.cfg = cfg
        self.tokenizer = Tokenizer(kind, tok_arrays)
        model = build_model(cfg, self.tokenizer.vocab)
        if arrays is not None:
            load_arrays(model, arrays, cfg.checkpoint)
        self.width = int(model.cls[...].shape[0])
        self.graphdef, self.state = nnx.split(model)
        self.parameters = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(self.state))

    def fingerprint(self) -> dict[str, Any]:
        return {"weights": self.weights, "pool": self.cfg.pool}

    def training(self) -> dict[str, Any] | None:
        from vfeval_vimpac.checkpoint import encoder_training

        return encoder_training(self.cfg)

    def num_parameters(self) -> int:
        return self.parameters

    def embed_video(self, clips: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(clips), self.width), dtype=np.float32)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, clip in enumerate(clips):
            weights.check_clip(clip)
            groups.setdefault(tuple(clip.shape), []).append(i)
        for idx in groups.values():
            codes = self.tokenizer.codes(np.stack([clips[i] for i in idx]), self.cfg.image_size)
            out[idx] = np.asarray(_embed(self.graphdef, self.state, codes, self.cfg.pool), dtype=np.float32)
        return out


def make_encoder(config: VimpacConfig) -> JaxVimpacEncoder:
    return JaxVimpacEncoder(config)
