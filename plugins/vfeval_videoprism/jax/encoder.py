"""``videoprism`` on JAX: our Flax model (``model.py``) with the official arrays, each forward jitted once per
input shape. Imports no torch."""

from __future__ import annotations

from functools import partial

import jax
import numpy as np
from flax import nnx

from vfeval_videoprism import checkpoint
from vfeval_videoprism.base import VideoPrismEncoder
from vfeval_videoprism.config import VideoPrismConfig
from vfeval_videoprism.inputs import Source, locate
from vfeval_videoprism.jax.model import build, load_official


# The graph (the architecture) is static and the weights an argument: every encoder of one architecture
# shares the compiled program of each input shape.
@partial(jax.jit, static_argnums=0)
def _embed_video(graph: nnx.GraphDef, state: nnx.State, video: jax.Array) -> jax.Array:
    return nnx.merge(graph, state).embed_video(video)


@partial(jax.jit, static_argnums=0)
def _embed_text(graph: nnx.GraphDef, state: nnx.State, ids: jax.Array, valid: jax.Array) -> jax.Array:
    return nnx.merge(graph, state).embed_text(ids, valid)


class JaxVideoPrismEncoder(VideoPrismEncoder):
    def __init__(self, cfg: VideoPrismConfig, source: Source, ckpt: checkpoint.Checkpoint) -> None:
        super().__init__(cfg, source, ckpt.arch)
        model = build(ckpt.arch, ckpt.text_table)
        load_official(model, ckpt.params)
        self._n_params = sum(int(np.prod(v.shape)) for v in ckpt.params.values())
        self._graph, self._state = nnx.split(model)

    def num_parameters(self) -> int:
        return self._n_params

    def _video(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(_embed_video(self._graph, self._state, _pad(x)))[: len(x)]

    def _text(self, ids: np.ndarray, valid: np.ndarray) -> np.ndarray:
        return np.asarray(_embed_text(self._graph, self._state, _pad(ids), _pad(valid)))[: len(ids)]


def _pad(x: np.ndarray) -> np.ndarray:
    """Rows padded (with copies of the first) to a power of two: a few compiled batch sizes serve them all."""
    n = 1 << (len(x) - 1).bit_length()
    return x if n == len(x) else np.concatenate([x, np.repeat(x[:1], n - len(x), axis=0)])


def make_encoder(cfg: VideoPrismConfig) -> JaxVideoPrismEncoder:
    source = locate(cfg.model)
    return JaxVideoPrismEncoder(cfg, source, checkpoint.load(source.path))
