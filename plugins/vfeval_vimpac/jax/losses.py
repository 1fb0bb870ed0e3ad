"""VIMPAC's losses in JAX: twins of ``torch/losses.py``, value for value. The batch is the global one
(sharded over devices under ``jax.jit``), so there is no hand-written gather."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from vfeval_videofirst.jax.losses import normalize

LARGE = 1e9


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-row ``-log softmax(logits)[label]``."""
    return jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]


def mlm_loss(logits: jax.Array, codes: jax.Array, masked: jax.Array) -> jax.Array:
    ce = _cross_entropy(logits.astype(jnp.float32), codes.astype(jnp.int32))
    return jnp.sum(jnp.where(masked, ce, 0.0)) / jnp.maximum(jnp.sum(masked), 1)


def nce_loss(first: jax.Array, second: jax.Array, temperature: float) -> jax.Array:
    a, b = normalize(first.astype(jnp.float32)), normalize(second.astype(jnp.float32))
    n = a.shape[0]
    self_mask = jnp.eye(n) * LARGE
    labels = jnp.arange(n)
    ab, ba = a @ b.T / temperature, b @ a.T / temperature
    aa, bb = a @ a.T / temperature - self_mask, b @ b.T / temperature - self_mask
    loss_a = jnp.mean(_cross_entropy(jnp.concatenate([ab, aa], 1), labels))
    loss_b = jnp.mean(_cross_entropy(jnp.concatenate([ba, bb], 1), labels))
    return (loss_a + loss_b) * temperature


def vimpac_loss(model, inputs: jax.Array, codes: jax.Array, masked: jax.Array, cfg) -> tuple[jax.Array, dict[str, jax.Array]]:
    """As ``torch/losses.py:vimpac_loss``: inputs, codes, masked ``[B, 2, T, H, W]`` → (total, parts)."""
    b = inputs.shape[0]

    def flat(x: jax.Array) -> jax.Array:
        return jnp.swapaxes(x, 0, 1).reshape(2 * b, *x.shape[2:])

    proj, logits = model(flat(inputs))
    mlm = mlm_loss(logits, flat(codes).reshape(2 * b, -1), flat(masked).reshape(2 * b, -1))
    nce = nce_loss(proj[:b], proj[b:], cfg.temperature)
    return cfg.mlm_weight * mlm + cfg.nce_weight * nce, {"mlm": mlm, "nce": nce}
