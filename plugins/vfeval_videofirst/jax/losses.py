"""The contrastive losses of the JAX trainer: twins of ``torch/losses.py``, value for value.

- InfoNCE (CLIP, Radford et al. 2021) with several positives per video: every positive pair is scored
  against the negatives of its row (video → text) and of its column (text → video), and the loss is the
  mean over positive pairs of both directions.
- Sigmoid (SigLIP, Zhai et al. 2023): every (video, text) pair a binary problem, summed and divided by B.

One difference from the torch twins: shapes stay fixed from step to step so that the step compiles once,
so the texts of a batch come padded to a fixed count and ``real`` ``[K]`` marks the real ones. A padded
text is neither a positive nor a negative of anything: it changes no value and no gradient.

The batch is the global one: under ``jax.jit`` with the batch sharded over devices (``sharding.py``)
XLA gathers what the similarity matrix needs, so there is no hand-written gather here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """``x / max(||x||, eps)`` along the last axis (``torch.nn.functional.normalize``)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def _logsumexp_rows(x: jax.Array) -> jax.Array:
    """``logsumexp`` over axis 1 that is -inf for a row of -inf only, with a finite (zero) gradient there.

    ``jax.nn.logsumexp`` would give ``0 * inf`` in the backward pass of such a row (a video whose every
    text is a positive), which poisons every gradient with NaN.
    """
    top = jnp.max(x, axis=1, keepdims=True)
    finite = jnp.isfinite(top)
    shifted = jnp.where(finite, x - jnp.where(finite, top, 0.0), -jnp.inf)
    total = jnp.sum(jnp.exp(shifted), axis=1, keepdims=True)
    return jnp.where(total > 0, jnp.log(jnp.where(total > 0, total, 1.0)) + jnp.where(finite, top, 0.0), -jnp.inf)


def _positive_pairs_loss(logits: jax.Array, positives: jax.Array, excluded: jax.Array, extra: jax.Array | None):
    """Mean over positive pairs (i, k) of ``-log(exp(l_ik) / (exp(l_ik) + sum of exp over row i's negatives))``.

    ``excluded`` ``[B, K]`` marks entries that are no negative of their row (padded texts)."""
    negatives = jnp.where(positives | excluded, -jnp.inf, logits)
    if extra is not None:
        negatives = jnp.concatenate([negatives, extra], axis=1)
    rest = _logsumexp_rows(negatives)  # [B, 1]
    per_pair = jnp.logaddexp(logits, rest) - logits
    count = jnp.sum(positives)
    return jnp.sum(jnp.where(positives, per_pair, 0.0)) / jnp.maximum(count, 1)


def _masks(b: int, k: int, positives: jax.Array | None, real: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    if positives is None:
        positives = jnp.eye(b, k, dtype=bool)
    if real is None:
        real = jnp.ones((k,), dtype=bool)
    return positives & real[None, :], jnp.broadcast_to(~real[None, :], (b, k))


def _valid_rows(valid: jax.Array | None, b: int, n: int) -> jax.Array:
    if valid is None:
        return jnp.ones((b, n), dtype=bool)
    return jnp.broadcast_to(valid if valid.ndim == 2 else valid[None, :], (b, n))


def infonce(
    video: jax.Array,
    text: jax.Array,
    logit_scale: jax.Array,
    positives: jax.Array | None = None,
    negatives: jax.Array | None = None,
    valid: jax.Array | None = None,
    real: jax.Array | None = None,
) -> jax.Array:
    """Symmetric multi-positive InfoNCE. video ``[B, E]``, text ``[K, E]`` → scalar.

    ``positives`` ``[B, K]`` bool marks which texts are captions of which video (None: the diagonal).
    ``negatives`` ``[N, E]`` are extra texts competing as captions of every video (video → text only),
    where ``valid`` (``[N]`` or ``[B, N]``) is True. ``real`` ``[K]`` marks the texts that are not padding.
    """
    video, text = normalize(video), normalize(text)
    scale = jnp.exp(logit_scale)
    logits = scale * video @ text.T  # [B, K]
    positives, excluded = _masks(len(video), len(text), positives, real)
    extra = None
    if negatives is not None:
        extra = scale * video @ normalize(negatives).T  # [B, N]
        extra = jnp.where(_valid_rows(valid, *extra.shape), extra, -jnp.inf)
    to_text = _positive_pairs_loss(logits, positives, excluded, extra)
    to_video = _positive_pairs_loss(logits.T, positives.T, jnp.zeros_like(excluded.T), None)
    return (to_text + to_video) / 2


def sigmoid_loss(
    video: jax.Array,
    text: jax.Array,
    logit_scale: jax.Array,
    bias: jax.Array,
    positives: jax.Array | None = None,
    negatives: jax.Array | None = None,
    valid: jax.Array | None = None,
    real: jax.Array | None = None,
) -> jax.Array:
    """SigLIP's pairwise logistic loss, summed over pairs and divided by B. video ``[B, E]``, text ``[K, E]``
    → scalar. Arguments as in ``infonce``; ``bias`` is the learned logit bias."""
    video, text = normalize(video), normalize(text)
    scale = jnp.exp(logit_scale)
    logits = scale * video @ text.T + bias  # [B, K]
    positives, excluded = _masks(len(video), len(text), positives, real)
    signs = jnp.where(positives, 1.0, -1.0)
    loss = jnp.sum(jnp.where(excluded, 0.0, -jax.nn.log_sigmoid(signs * logits)))
    if negatives is not None:
        extra = -jax.nn.log_sigmoid(-(scale * video @ normalize(negatives).T + bias))  # [B, N]
        loss = loss + jnp.sum(jnp.where(_valid_rows(valid, *extra.shape), extra, 0.0))
    return loss / len(video)
