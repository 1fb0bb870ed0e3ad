"""The tokenizers of ``vfeval_vimpac/tokenizer.py`` in JAX: the twin of ``torch/tokenizer.py``, code for code.

Convolutions keep torch's layouts (``NCHW`` inputs, ``OIHW`` kernels), so the arrays of a tokenizer file
are used as they are. The encoder is compiled once per kind and input shape.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vfeval_vimpac import tokenizer as files
from vfeval_vimpac.tokenizer import DVAE_EPS, VQVAE_LAYERS

_DIMS = ("NCHW", "OIHW", "NCHW")


def conv(x: jax.Array, w: jax.Array, b: jax.Array, stride: int = 1, padding: int = 0) -> jax.Array:
    """``torch.nn.functional.conv2d`` (cross-correlation, symmetric zero padding)."""
    y = jax.lax.conv_general_dilated(
        x, w, (stride, stride), [(padding, padding)] * 2, dimension_numbers=_DIMS,
        precision=jax.lax.Precision.HIGHEST,
    )
    return y + b[None, :, None, None]


def vqvae_latents(t: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    h = x - 0.5
    for i in range(VQVAE_LAYERS - 1):
        h = jax.nn.relu(conv(h, t[f"enc.{i}.weight"], t[f"enc.{i}.bias"], stride=2, padding=1))
    last = VQVAE_LAYERS - 1
    return conv(h, t[f"enc.{last}.weight"], t[f"enc.{last}.bias"])


def nearest(z: jax.Array, codebook: jax.Array) -> jax.Array:
    flat = jnp.transpose(z, (0, 2, 3, 1)).reshape(-1, z.shape[1])
    distance = jnp.sum(codebook * codebook, 1)[None, :] - 2 * jnp.dot(flat, codebook.T, precision=jax.lax.Precision.HIGHEST)
    return jnp.argmin(distance, axis=1).reshape(z.shape[0], *z.shape[2:])


def _conv(t: dict[str, jax.Array], name: str, x: jax.Array) -> jax.Array:
    w = t[name + ".w"]
    return conv(x, w, t[name + ".b"], padding=(w.shape[-1] - 1) // 2)


def _max_pool(x: jax.Array) -> jax.Array:
    n, c, h, w = x.shape
    return x[:, :, : h // 2 * 2, : w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def dvae_codes(t: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    h = _conv(t, "blocks.input", (1 - 2 * DVAE_EPS) * x + DVAE_EPS)
    groups = files.dvae_groups(t)
    gain = files.dvae_post_gain(t)
    for g, blocks in enumerate(groups):
        for prefix in blocks:
            skip = _conv(t, prefix + "id_path", h) if prefix + "id_path.w" in t else h
            r = h
            for n in range(1, 5):
                r = _conv(t, f"{prefix}res_path.conv_{n}", jax.nn.relu(r))
            h = skip + gain * r
        if g < len(groups) - 1:
            h = _max_pool(h)
    return jnp.argmax(_conv(t, "blocks.output.conv", jax.nn.relu(h)), axis=1)


@partial(jax.jit, static_argnums=(0, 3))
def _codes(kind: str, t: dict[str, jax.Array], frames: jax.Array, size: int) -> jax.Array:
    x = frames.astype(jnp.float32) / 255.0  # [N, H, W, 3]
    if x.shape[1:3] != (size, size):
        x = jax.image.resize(x, (x.shape[0], size, size, 3), method="linear", antialias=True)
    x = jnp.transpose(x, (0, 3, 1, 2))
    return vqvae_codes(t, x) if kind == "vqvae" else dvae_codes(t, x)


def vqvae_codes(t: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    return nearest(vqvae_latents(t, x), t["codebook"])


class Tokenizer:
    """A tokenizer file's encoder: ``codes(frames, image_size)``."""

    def __init__(self, kind: str, arrays: dict[str, np.ndarray]) -> None:
        self.kind, self.arrays = kind, arrays
        self.vocab = files.vocab_size(kind, arrays)
        self.tensors = {k: jnp.asarray(v, jnp.float32) for k, v in arrays.items()}

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        kind, arrays, _ = files.load(path)
        return cls(kind, arrays)

    def codes(self, frames: np.ndarray, image_size: int) -> np.ndarray:
        """``uint8 [..., H, W, 3]`` → ``int32 [..., S/8, S/8]`` (numpy)."""
        frames = np.asarray(frames)
        lead = frames.shape[:-3]
        out = _codes(self.kind, self.tensors, jnp.asarray(frames.reshape(-1, *frames.shape[-3:])), image_size)
        return np.asarray(out, dtype=np.int32).reshape(*lead, *out.shape[-2:])
