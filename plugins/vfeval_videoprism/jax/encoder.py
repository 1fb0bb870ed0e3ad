"""``videoprism`` on JAX: our Flax model (``model.py``) with the official arrays, each forward jitted once per
input shape. Imports no torch."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from vfeval_videoprism import checkpoint
from vfeval_videoprism.base import VideoPrismEncoder
from vfeval_videoprism.config import VideoPrismConfig
from vfeval_videoprism.inputs import Source, locate
from vfeval_videoprism.jax.model import build, load_official


class JaxVideoPrismEncoder(VideoPrismEncoder):
    def __init__(self, cfg: VideoPrismConfig, source: Source, ckpt: checkpoint.Checkpoint) -> None:
        super().__init__(cfg, source, ckpt.arch)
        model = build(ckpt.arch, ckpt.text_table)
        load_official(model, ckpt.params)
        self._n_params = sum(int(np.prod(v.shape)) for v in ckpt.params.values())
        graph, state = nnx.split(model)
        self._state = state
        self._video_fn = jax.jit(lambda s, x: nnx.merge(graph, s).embed_video(x))
        self._text_fn = jax.jit(lambda s, ids, valid: nnx.merge(graph, s).embed_text(ids, valid))

    def num_parameters(self) -> int:
        return self._n_params

    def _video(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._video_fn(self._state, x))

    def _text(self, ids: np.ndarray, valid: np.ndarray) -> np.ndarray:
        return np.asarray(self._text_fn(self._state, ids, valid))


def make_encoder(cfg: VideoPrismConfig) -> JaxVideoPrismEncoder:
    source = locate(cfg.model)
    return JaxVideoPrismEncoder(cfg, source, checkpoint.load(source.path))
