"""The VIMPAC transformer in Flax NNX: the block-for-block twin of ``torch/model.py`` under the same tensor
names (so ``vfeval_videofirst.jax.model.state_arrays``/``load_arrays`` move the checkpoint as it is).
The blocks are the videofirst JAX encoder's (``Block``, ``LayerNorm``, ``Linear``, ``Embedding``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from vfeval_videofirst.jax.model import (
    Block,
    Embedding,
    LayerNorm,
    Linear,
    _trunc_normal,
    gelu,
    resample_time,
)


class MlmHead(nnx.Module):
    def __init__(self, width: int, vocab: int, *, rng: np.random.Generator) -> None:
        self.dense = Linear(width, width, rng=rng)
        self.ln = LayerNorm(width)
        self.bias = nnx.Param(jnp.zeros((vocab,), jnp.float32))

    def __call__(self, x: jax.Array, table: jax.Array) -> jax.Array:
        return jnp.einsum("...d,vd->...v", self.ln(gelu(self.dense(x))), table) + self.bias[...]


class ClsHead(nnx.Module):
    def __init__(self, width: int, out: int, *, rng: np.random.Generator) -> None:
        self.fc1 = Linear(width, width, rng=rng)
        self.fc2 = Linear(width, out, rng=rng)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.relu(self.fc1(x)))


class Vimpac(nnx.Module):
    """Codes ``[B, T, H, W]`` → features, masked-token logits and the projected [CLS] (as the torch twin)."""

    def __init__(
        self, *, width: int, depth: int, heads: int, mlp: int, vocab: int, grid: tuple[int, int, int], proj_dim: int,
        rng: np.random.Generator,
    ) -> None:
        nt, nh, nw = grid
        self.vocab = vocab
        self.token = Embedding(vocab + 1, width, rng=rng)
        self.cls = nnx.Param(_trunc_normal(rng, (width,)))
        self.pos_time = nnx.Param(_trunc_normal(rng, (nt, width)))
        self.pos_space = nnx.Param(_trunc_normal(rng, (nh * nw, width)))
        self.blocks = nnx.List([Block(width, heads, mlp, "gelu", rng=rng) for _ in range(depth)])
        self.ln_post = LayerNorm(width)
        self.mlm = MlmHead(width, vocab, rng=rng)
        self.head = ClsHead(width, proj_dim, rng=rng)

    def features(self, codes: jax.Array) -> jax.Array:
        b, nt, nh, nw = codes.shape
        x = self.token(codes).reshape(b, nt, nh * nw, -1)
        x = (x + self.pos_space[...] + resample_time(self.pos_time[...], nt)[:, None]).reshape(b, nt * nh * nw, -1)
        x = jnp.concatenate([jnp.broadcast_to(self.cls[...], (b, 1, x.shape[-1])), x], axis=1)
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x)

    def __call__(self, codes: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = self.features(codes)
        return self.head(x[:, 0]), self.mlm(x[:, 1:], self.token.weight[...][: self.vocab])

    def embed(self, codes: jax.Array, pool: str = "cls") -> jax.Array:
        x = self.features(codes)
        return x[:, 0] if pool == "cls" else x[:, 1:].mean(1)
