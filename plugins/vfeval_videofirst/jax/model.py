"""The masked video-first dual encoder in Flax NNX: the block-for-block twin of ``torch/model.py``.

Papers and the token layout are described in ``torch/model.py``; this file follows it block for block,
and ``checkpoint.py`` documents the one safetensors layout both read and write. Every module here names
its parameters as the torch twin does (``weight``/``bias`` of a linear layer stored ``[out, in]``, the
tubelet kernel ``[D, 3, t, h, w]``), so the flattened NNX state *is* the checkpoint: ``state_arrays`` and
``load_arrays`` move it with no renaming and no transposition.

Public interface (shapes; ``B`` batch, ``D`` width, ``E`` embed_dim):

- ``VideoTransformer(*, width, depth, heads, mlp, tubelet, grid, embed_dim, attention="joint",
  pool="cls", act="gelu", mask="none", mask_ratio=0.0, mask_at_eval=False, rng)``
  - ``__call__(video, keep=None) -> [B, E]``: ``video`` ``float32 [B, T, H, W, 3]`` (channels last,
    normalised, T a multiple of the tubelet's t; ``encoder.preprocess`` makes it); ``keep`` ``int [B, N_keep]``
    kept patch-token indices (``vfeval_videofirst.masking``), or None for every token.
  - ``tokens(video, keep=None) -> (x, nt)``: the sequence entering the transformer, as in torch.
  - ``draw_keep(batch, grid, rng, training) -> np.ndarray | None``: kept indices drawn with numpy
    (the same draws as the torch twin from the same seed), None when this mode does not mask.
- ``SmallTextTower(*, width, depth, heads, mlp, embed_dim, length, tokens="bytes", rng)``:
  ``tokenize(texts) -> {"ids", "mask"}`` (numpy), ``__call__(ids, mask, shift=None) -> [B, E]``.
- ``ClipTextTower(text_config, projection_dim, tokenizer, *, rng)``: CLIP's text transformer;
  ``tokenize(texts) -> {"input_ids", "attention_mask"}`` (numpy), ``__call__(input_ids, attention_mask) -> [B, E]``.
- ``DualEncoder(video, text, logit_scale)``: ``.video``, ``.text`` (or None), ``.logit_scale``
  (``nnx.Param``, scalar); ``encode_text(texts) -> [B, E]``.
- ``state_arrays(model) -> {name: np.ndarray}`` and ``load_arrays(model, arrays, path)``: the checkpoint's
  tensors (names as in ``checkpoint.py``), out of and into a model.

Nothing here imports torch. Randomness is explicit: ``rng``, a ``numpy.random.Generator``, draws the
initial weights (``encoder.build_model`` seeds it with ``seed``), and numpy generators draw the masks.
Attention is softmax attention in fp32 (``attention``), in blocks of queries on long inputs, and one head at a
time when only its forward pass is needed: XLA fuses it well on CPU, but unlike torch's
``scaled_dot_product_attention`` the gradient keeps every block's scores, so very long inputs need more
memory here when training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vfeval.errors import UsageError
from vfeval_videofirst.checkpoint import check_tensors, time_resampling
from vfeval_videofirst.masking import draw_keep, masking_on
from vfeval_videofirst.tokenizers import BYTE_VOCAB, WORD_BUCKETS, byte_tokenize, clip_tokenize, word_tokenize

LN_EPS = 1e-5  # torch.nn.LayerNorm's and CLIP's
_MASKED = -1e30  # an additive mask value that exp() sends to 0 in fp32 without inf arithmetic

# ---------------------------------------------------------------------------------------------------
# Helpers


def quick_gelu(x: jax.Array) -> jax.Array:
    """The sigmoid approximation of GELU that OpenAI's CLIP was trained with."""
    return x * jax.nn.sigmoid(1.702 * x)


def gelu(x: jax.Array) -> jax.Array:
    """GELU with the exact erf, as ``torch.nn.functional.gelu`` (not the tanh approximation)."""
    return jax.nn.gelu(x, approximate=False)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {"gelu": gelu, "quick_gelu": quick_gelu}


def resample_time(pos: jax.Array, n: int) -> jax.Array:
    """Temporal position embeddings ``[nt, D]`` → ``[n, D]`` by linear interpolation (unchanged if n == nt)."""
    if pos.shape[0] == n:
        return pos
    i0, i1, w = time_resampling(pos.shape[0], n)
    return pos[i0] * (1.0 - w[:, None]) + pos[i1] * w[:, None]


def _trunc_normal(rng: np.random.Generator, shape: tuple[int, ...], std: float = 0.02) -> jax.Array:
    """Normal draws of ``std`` cut at two standard deviations (redrawn beyond), as ViT initialises.

    Drawn with numpy: an eager ``jax.random`` call compiles one small program per shape, which made
    building a model take longer than running it."""
    x = rng.standard_normal(shape)
    out = np.abs(x) > 2.0
    while out.any():
        x[out] = rng.standard_normal(int(out.sum()))
        out = np.abs(x) > 2.0
    return jnp.asarray(std * x, jnp.float32)


QUERY_CHUNK = 256
"""Queries per block of ``attention`` on long inputs: each block's ``chunk x N`` scores stay in cache, which on
CPU made the forward of a 1568-token clip ~15% and its gradient ~30% faster than one ``N x N`` block
(``bench/backends.py``). Every row's softmax still spans all keys, so the result is the same arithmetic."""

HEAD_CHUNK = 512
"""Queries per block of ``_attention_per_head``: one head's ``512 x N`` scores. On 2 CPU cores, against 256 at
1569 tokens: 10-15% faster with 6 heads of 64, the same with 2 of 32; 4% faster at 3137 tokens."""

FLASH_MIN = 1024
"""From this many tokens on, the gradient of unmasked attention keeps no ``N x N`` weights (``_attention_unmasked``).
A dense S training step at 16 frames of 224 px (1569 tokens, 2 clips) then holds 1860 MiB instead of 4355, at
the same speed (5.0 s against 5.2, ``vfeval profile``), and tiny's 75 MiB instead of 240, 20% faster. Timed
alone (forward and gradient of one attention, 2 clips of 6 heads of 64; 2 of 32), against the blocks' autodiff:
0.97x (0.80x) the time at 1569 tokens, 1.1x (1.7x) at 785, 2x at 393, where it recomputes the scores for less
memory than a few MiB saves."""

PER_HEAD_MIN = 384
"""From this many tokens on, unmasked attention that is not differentiated runs one (clip, head) at a time
(``_attention_per_head``). Timed alone on 2 CPU cores against ``_attention_blocks`` (6 heads of 64; 2 of 32):
1.04-1.1x (1.2-1.4x) as fast at 393 tokens, 1.2x (1.0x) at 785, 1.85x (1.45x) at 1569, 2.1x (2.3x) at 3137; at
257 tokens, 0.9x (1.4x)."""


def attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None = None) -> jax.Array:
    """Softmax attention. q, k, v: ``[B, N, heads, d]``; key_mask ``[B, N]`` True for real keys, or an additive
    ``[B or 1, 1, N, N]`` float mask → ``[B, N, heads, d]``. Long inputs go in blocks of ``QUERY_CHUNK`` queries;
    long unmasked ones through ``_attention_unmasked``, whose gradient keeps no ``N x N`` scores."""
    if key_mask is None and q.shape[1] > QUERY_CHUNK:
        return _attention_unmasked(q, k, v)
    return _attention_blocks(q, k, v, key_mask)


def _attention_blocks(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None) -> jax.Array:
    """``attention`` with every head and clip of a block of ``QUERY_CHUNK`` queries in one program."""
    n = q.shape[1]
    if n <= QUERY_CHUNK:
        return _attention_block(q, k, v, key_mask)
    blocks = []
    for start in range(0, n, QUERY_CHUNK):
        rows = slice(start, start + QUERY_CHUNK)
        mask = key_mask if key_mask is None or key_mask.dtype == jnp.bool_ else key_mask[:, :, rows]
        blocks.append(_attention_block(q[:, rows], k, v, mask))
    return jnp.concatenate(blocks, axis=1)


def _attention_block(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None) -> jax.Array:
    """``attention`` for queries ``[B, n, heads, d]`` against all keys; an additive mask is ``[B or 1, 1, n, N]``."""
    # Scale q, not the n x N scores: the same arithmetic as torch's kernel, on n x d numbers instead of n x N.
    logits = jnp.einsum("bqhd,bkhd->bhqk", q / math.sqrt(q.shape[-1]), k)
    if key_mask is not None:
        if key_mask.dtype == jnp.bool_:
            logits = jnp.where(key_mask[:, None, None, :], logits, _MASKED)
        else:
            logits = logits + key_mask
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)


def _query_blocks(x: jax.Array, axis: int) -> jax.Array:
    """``x`` with its token axis cut into equal blocks of at most ``QUERY_CHUNK`` (the last zero-padded by fewer
    rows than there are blocks), the blocks first."""
    n = x.shape[axis]
    blocks = -(-n // QUERY_CHUNK)
    size = -(-n // blocks)
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, blocks * size - n)
    x = jnp.pad(x, pad)
    x = x.reshape(*x.shape[:axis], blocks, size, *x.shape[axis + 1 :])
    return jnp.moveaxis(x, axis, 0)


def _from_query_blocks(x: jax.Array, axis: int, n: int) -> jax.Array:
    """The inverse of ``_query_blocks``: ``[blocks, ..., QUERY_CHUNK, ...]`` back to ``n`` tokens on ``axis``."""
    x = jnp.moveaxis(x, 0, axis)
    return x.reshape(*x.shape[:axis], -1, *x.shape[axis + 2 :]).take(jnp.arange(n), axis=axis)


def _attention_with_lse(q: jax.Array, k: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Unmasked ``_attention_blocks`` (the same arithmetic: each row's weights normalised, then applied), and each
    row's log-sum-exp of its scaled scores, ``[B, heads, N]``: what the gradient needs to rebuild the weights.
    The blocks run one after another (``lax.map``), so one block's scores are all that is held at a time."""
    n = q.shape[1]

    def one(qb: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits = jnp.einsum("bqhd,bkhd->bhqk", qb, k)
        top = jnp.max(logits, axis=-1, keepdims=True)
        weights = jnp.exp(logits - top)
        total = jnp.sum(weights, axis=-1, keepdims=True)
        return jnp.einsum("bhqk,bkhd->bqhd", weights / total, v), (top + jnp.log(total))[..., 0]

    outs, lses = jax.lax.map(one, _query_blocks(q / math.sqrt(q.shape[-1]), 1))
    return _from_query_blocks(outs, 1, n), _from_query_blocks(lses, 2, n)


@jax.custom_vjp
def _attention_unmasked(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Unmasked ``attention`` of more than ``QUERY_CHUNK`` tokens.

    Forward alone (inference, a frozen teacher): from ``PER_HEAD_MIN`` tokens on, one (clip, head) at a time
    (``_attention_per_head``), else ``_attention_blocks``. Differentiated, below ``FLASH_MIN`` tokens: the
    blocks and their autodiff gradient, which keeps every block's weights for the backward pass. From
    ``FLASH_MIN`` on: the blocks' forward keeps only each row's log-sum-exp beside q, k, v and the output, and
    the backward (``_attention_unmasked_bwd``) rebuilds a block's weights from them, as FlashAttention's does."""
    if q.shape[1] >= PER_HEAD_MIN:
        return _attention_per_head(q, k, v)
    return _attention_blocks(q, k, v, None)


def _attention_unmasked_fwd(q: jax.Array, k: jax.Array, v: jax.Array) -> tuple[jax.Array, Any]:
    if q.shape[1] < FLASH_MIN:
        return jax.vjp(lambda *qkv: _attention_blocks(*qkv, None), q, k, v)
    out, lse = _attention_with_lse(q, k, v)
    return out, (q, k, v, out, lse)


def _attention_unmasked_bwd(res: Any, grad: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Below ``FLASH_MIN`` tokens, the blocks' own VJP. From it on, per block of queries, one after another
    (``lax.scan``): weights ``P = exp(S - lse)``; ``dV += P^T dO``; ``dS = P * (dO V^T - rowsum(dO * O))``;
    ``dQ = dS K / sqrt(d)``; ``dK += dS^T Q / sqrt(d)``. A block's ``chunk x N`` temporaries are all it holds.
    Padded query rows have a zero ``dO``, so they add nothing."""
    if not isinstance(res, tuple):
        return res(grad)
    q, k, v, out, lse = res
    n, scale = q.shape[1], 1.0 / math.sqrt(q.shape[-1])
    delta = jnp.einsum("bqhd,bqhd->bhq", grad, out)  # rowsum(dO * O) = rowsum(P * dP)

    def one(carry: tuple[jax.Array, jax.Array], block: tuple) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
        dk, dv = carry
        qb, gb, lb, db = block
        weights = jnp.exp(jnp.einsum("bqhd,bkhd->bhqk", qb, k) - lb[..., None])
        dv = dv + jnp.einsum("bhqk,bqhd->bkhd", weights, gb)
        dscores = weights * (jnp.einsum("bqhd,bkhd->bhqk", gb, v) - db[..., None])
        dk = dk + jnp.einsum("bhqk,bqhd->bkhd", dscores, qb)
        return (dk, dv), jnp.einsum("bhqk,bkhd->bqhd", dscores, k) * scale

    blocks = (_query_blocks(q * scale, 1), _query_blocks(grad, 1), _query_blocks(lse, 2), _query_blocks(delta, 2))
    (dk, dv), dq = jax.lax.scan(one, (jnp.zeros_like(k), jnp.zeros_like(v)), blocks)
    return _from_query_blocks(dq, 1, n), dk, dv


_attention_unmasked.defvjp(_attention_unmasked_fwd, _attention_unmasked_bwd)


def _attention_per_head(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Unmasked attention, one (clip, head) after another (``lax.map``), its queries in blocks of ``HEAD_CHUNK``:
    a block's scores (``chunk x N``) are one head's, a few MiB, where the blocks of ``_attention_blocks`` hold
    every head's. Each row's weights are normalised after they have weighted the values (``d`` divisions per row
    instead of ``N``). Forward passes only: ``_attention_unmasked`` gives it its gradient."""
    b, n, h, d = q.shape
    qh, kh, vh = (x.transpose(0, 2, 1, 3).reshape(b * h, n, d) for x in (q / math.sqrt(d), k, v))

    def one_head(args: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
        qi, ki, vi = args  # [n, d] each
        rows = []
        for start in range(0, n, HEAD_CHUNK):
            logits = qi[start : start + HEAD_CHUNK] @ ki.T
            weights = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
            rows.append((weights @ vi) / jnp.sum(weights, axis=-1, keepdims=True))
        return jnp.concatenate(rows, axis=0)

    return jax.lax.map(one_head, (qh, kh, vh)).reshape(b, h, n, d).transpose(0, 2, 1, 3)


# ---------------------------------------------------------------------------------------------------
# Layers with torch's parameter names and layouts


class Linear(nnx.Module):
    """``y = x W^T + b`` with ``weight`` ``[out, in]`` (torch's layout, so checkpoints need no transposition)."""

    def __init__(self, d_in: int, d_out: int, *, bias: bool = True, rng: np.random.Generator) -> None:
        self.weight = nnx.Param(_trunc_normal(rng, (d_out, d_in)))
        self.bias = nnx.Param(jnp.zeros((d_out,), jnp.float32)) if bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.einsum("...i,oi->...o", x, self.weight[...])
        return y if self.bias is None else y + self.bias[...]


class LayerNorm(nnx.Module):
    def __init__(self, width: int, eps: float = LN_EPS) -> None:
        self.weight = nnx.Param(jnp.ones((width,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((width,), jnp.float32))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.weight[...] + self.bias[...]


class Embedding(nnx.Module):
    def __init__(self, n: int, width: int, *, std: float = 0.02, rng: np.random.Generator) -> None:
        self.weight = nnx.Param(_trunc_normal(rng, (n, width), std))

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.weight[...], ids, axis=0)


# ---------------------------------------------------------------------------------------------------
# Blocks


class TubeletEmbed(nnx.Module):
    """Non-overlapping t x h x w tubelets → tokens: a Conv3d whose kernel equals its stride, written as a
    reshape and one contraction. ``proj.weight`` is ``[D, 3, t, h, w]`` as torch's Conv3d."""

    def __init__(self, tubelet: tuple[int, int, int], width: int, *, rng: np.random.Generator) -> None:
        self.tubelet = tuple(tubelet)
        self.proj = nnx.Dict(weight=nnx.Param(_trunc_normal(rng, (width, 3, *tubelet))))

    def __call__(self, video: jax.Array) -> jax.Array:
        """video: ``[B, T, H, W, 3]`` → ``[B, nt, nh, nw, D]``."""
        b, n, h, w, c = video.shape
        t, ph, pw = self.tubelet
        x = video.reshape(b, n // t, t, h // ph, ph, w // pw, pw, c)
        return jnp.einsum("bTtHhWwc,dcthw->bTHWd", x, self.proj["weight"][...])


class Attention(nnx.Module):
    """Multi-head self-attention with q, k and v fused into ``qkv`` (``[3D, D]``, q rows first)."""

    def __init__(self, width: int, heads: int, *, rng: np.random.Generator) -> None:
        self.heads = heads
        self.qkv = Linear(width, 3 * width, rng=rng)
        self.proj = Linear(width, width, rng=rng)

    def __call__(self, x: jax.Array, key_mask: jax.Array | None = None) -> jax.Array:
        """x: ``[B, N, D]``; key_mask: ``[B, N]`` bool, True for real tokens (None: all real) → ``[B, N, D]``."""
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads)
        out = attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], key_mask)
        return self.proj(out.reshape(b, n, d))


class Mlp(nnx.Module):
    def __init__(self, width: int, hidden: int, act: str, *, rng: np.random.Generator) -> None:
        self.fc1 = Linear(width, hidden, rng=rng)
        self.fc2 = Linear(hidden, width, rng=rng)
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(ACTIVATIONS[self.act](self.fc1(x)))


class Block(nnx.Module):
    """Pre-LN transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, width: int, heads: int, mlp: int, act: str, *, rng: np.random.Generator) -> None:
        self.ln1 = LayerNorm(width)
        self.attn = Attention(width, heads, rng=rng)
        self.ln2 = LayerNorm(width)
        self.mlp = Mlp(width, mlp, act, rng=rng)

    def __call__(self, x: jax.Array, key_mask: jax.Array | None = None) -> jax.Array:
        """x: ``[B, N, D]`` → ``[B, N, D]``."""
        x = materialised_gradient(x)
        x = x + self.attn(self.ln1(x), key_mask)
        return x + self.mlp(self.ln2(x))


@jax.custom_vjp
def materialised_gradient(x: jax.Array) -> jax.Array:
    """The identity, whose gradient is computed once and stored (on CPU).

    Without it, XLA's CPU compiler fuses the residual stream's gradient, a chain of elementwise LayerNorm
    backward terms, into every block's weight-gradient transpose instead of storing it once per block, so each
    block's backward recomputes the chain of every block above it: quadratic in depth. For S (12 blocks) at
    16 frames of 224 px, a gradient took 1.5 s against torch's 0.5 s. A dot is never fused into its consumers,
    so the backward passes the cotangent through a product with the identity matrix (exact for finite values:
    each entry is ``g_d * 1`` plus zeros): 0.78 s, with the same XLA memory analysis. An S training step got
    1.8x faster at 75% masking and 1.6x dense (``bench/backends.py``, ``vfeval profile``). Other backends
    compile the plain identity: on TPU a float32 dot would round, or cost six bfloat16 passes."""
    return x


def _materialised_gradient_fwd(x: jax.Array) -> tuple[jax.Array, None]:
    return x, None


def _materialised_gradient_bwd(_: None, grad: jax.Array) -> tuple[jax.Array]:
    if jax.default_backend() != "cpu":
        return (grad,)
    eye = jnp.eye(grad.shape[-1], dtype=grad.dtype)
    return (jnp.matmul(grad, eye, precision=jax.lax.Precision.HIGHEST),)


materialised_gradient.defvjp(_materialised_gradient_fwd, _materialised_gradient_bwd)


class TemporalGate(nnx.Module):
    """Attention along time for each spatial position: ``h + tanh(alpha) * attn(ln(h))``, alpha starting at 0."""

    def __init__(self, width: int, heads: int, *, rng: np.random.Generator) -> None:
        self.ln = LayerNorm(width)
        self.attn = Attention(width, heads, rng=rng)
        self.alpha = nnx.Param(jnp.zeros((), jnp.float32))

    def __call__(self, h: jax.Array) -> jax.Array:
        """h: ``[B * positions, nt, D]`` → same shape."""
        return h + jnp.tanh(self.alpha[...]) * self.attn(self.ln(h))


# ---------------------------------------------------------------------------------------------------
# The video transformer


class VideoTransformer(nnx.Module):
    """Tubelets → (masked) tokens → joint or factorised transformer → pooled, projected embedding.

    ``grid`` is (nt, nh, nw) of the clip length the temporal table is laid out for. Unlike the torch twin
    there is no train/eval mode: whether tokens are dropped is decided by whoever draws ``keep``
    (``draw_keep(..., training=...)``), which keeps ``__call__`` a pure function of its inputs.
    """

    def __init__(
        self,
        *,
        width: int,
        depth: int,
        heads: int,
        mlp: int,
        tubelet: tuple[int, int, int],
        grid: tuple[int, int, int],
        embed_dim: int,
        attention: str = "joint",
        pool: str = "cls",
        act: str = "gelu",
        mask: str = "none",
        mask_ratio: float = 0.0,
        mask_at_eval: bool = False,
        rng: np.random.Generator,
    ) -> None:
        nt, nh, nw = grid
        self.attention, self.pool = attention, pool
        self.mask, self.mask_ratio, self.mask_at_eval = mask, mask_ratio, mask_at_eval
        self.embed = TubeletEmbed(tubelet, width, rng=rng)
        self.cls = nnx.Param(_trunc_normal(rng, (width,)))
        self.pos_cls = nnx.Param(_trunc_normal(rng, (width,)))
        self.pos_space = nnx.Param(_trunc_normal(rng, (nh * nw, width)))
        self.pos_time = nnx.Param(jnp.zeros((nt, width), jnp.float32))  # zero: no slice is told apart at first
        self.ln_pre = LayerNorm(width)
        self.blocks = nnx.List([Block(width, heads, mlp, act, rng=rng) for _ in range(depth)])
        if attention == "factorised":
            self.temporal = nnx.List([TemporalGate(width, heads, rng=rng) for _ in range(depth)])
        self.ln_post = LayerNorm(width)
        self.head = Linear(width, embed_dim, bias=False, rng=rng)

    # -- masking --------------------------------------------------------------------------------------
    def masking(self, training: bool) -> bool:
        """Whether a forward pass in this mode drops tokens."""
        return masking_on(self.mask, self.mask_ratio, training, self.mask_at_eval)

    def draw_keep(
        self, batch: int, grid: tuple[int, int, int], rng: np.random.Generator, training: bool = True
    ) -> np.ndarray | None:
        """Kept patch-token indices ``[B, N_keep]`` for clips of token grid ``grid``, or None when not masking."""
        if not self.masking(training):
            return None
        return draw_keep(self.mask, self.mask_ratio, batch, grid, rng)

    # -- forward --------------------------------------------------------------------------------------
    def tokens(self, video: jax.Array, keep: jax.Array | None = None) -> tuple[jax.Array, int]:
        """The sequence entering the transformer, class tokens first, then the kept patch tokens.

        video: ``[B, T, H, W, 3]``; keep: ``[B, N_keep]`` or None. Returns ``(x, nt)``: joint ``x`` is
        ``[B, nt + N_keep, D]``, factorised ``[B, nt, 1 + N_keep / nt, D]``.
        """
        x = self.embed(video)  # [B, nt, nh, nw, D]
        b, nt, nh, nw, d = x.shape
        if nh * nw != self.pos_space.shape[0]:
            raise ValueError(f"frames give {nh}x{nw} patches; the model was built for {self.pos_space.shape[0]}")
        pos_time = resample_time(self.pos_time[...], nt)[:, None]  # [nt, 1, D]
        x = (x.reshape(b, nt, nh * nw, d) + self.pos_space[...] + pos_time).reshape(b, nt * nh * nw, d)
        if keep is not None:
            x = jnp.take_along_axis(x, jnp.asarray(keep)[:, :, None], axis=1)  # only kept tokens go further
        cls = jnp.broadcast_to(self.cls[...] + self.pos_cls[...] + pos_time[:, 0], (b, nt, d))
        if self.attention == "factorised":
            return jnp.concatenate([cls[:, :, None], x.reshape(b, nt, -1, d)], axis=2), nt
        return jnp.concatenate([cls, x], axis=1), nt

    def encode(self, video: jax.Array, keep: jax.Array | None = None) -> tuple[jax.Array, int]:
        """The transformer's output sequence, laid out as ``tokens`` returns its input: ``(x, nt)``
        (the torch twin's ``encode``; ``embedding`` and ``patch_tokens`` read it out)."""
        x, nt = self.tokens(video, keep)
        x = self.ln_pre(x)
        if self.attention == "factorised":
            b, _, n, d = x.shape
            for block, gate in zip(self.blocks, self.temporal, strict=True):
                x = block(x.reshape(b * nt, n, d)).reshape(b, nt, n, d)  # space: each slice on its own
                x = x.transpose(0, 2, 1, 3).reshape(b * n, nt, d)  # time: each position on its own
                x = gate(x).reshape(b, n, nt, d).transpose(0, 2, 1, 3)
        else:
            for block in self.blocks:
                x = block(x)
        return x, nt

    def embedding(self, x: jax.Array, nt: int) -> jax.Array:
        """``encode``'s output → the pooled, projected video embedding ``[B, embed_dim]``."""
        if self.attention == "factorised":
            pooled = x[:, :, 0].mean(1) if self.pool == "cls" else x[:, :, 1:].mean((1, 2))
        else:
            pooled = x[:, :nt].mean(1) if self.pool == "cls" else x[:, nt:].mean(1)
        return self.head(self.ln_post(pooled))

    def patch_tokens(self, x: jax.Array, nt: int) -> jax.Array:
        """``encode``'s output → the patch tokens after the final norm, ``[B, N_keep, D]`` in ``keep``'s order."""
        if self.attention == "factorised":
            b, _, n, d = x.shape
            return self.ln_post(x[:, :, 1:].reshape(b, nt * (n - 1), d))
        return self.ln_post(x[:, nt:])

    def __call__(self, video: jax.Array, keep: jax.Array | None = None) -> jax.Array:
        """video: ``[B, T, H, W, 3]`` → ``[B, embed_dim]``; ``keep`` as in ``tokens``."""
        return self.embedding(*self.encode(video, keep))


# ---------------------------------------------------------------------------------------------------
# A small text tower for training from scratch


class SmallTextTower(nnx.Module):
    """Tokens → embeddings + positions → a few pre-LN blocks → mean over real tokens → norm → projection."""

    def __init__(
        self,
        *,
        width: int,
        depth: int,
        heads: int,
        mlp: int,
        embed_dim: int,
        length: int,
        tokens: str = "bytes",
        rng: np.random.Generator,
    ) -> None:
        self.length = length
        self.tokens = tokens
        # Unit-variance token embeddings, as the torch twin (see its comment for why).
        self.token = Embedding(BYTE_VOCAB if tokens == "bytes" else WORD_BUCKETS, width, std=1.0, rng=rng)
        self.pos = nnx.Param(_trunc_normal(rng, (length, width)))
        self.blocks = nnx.List([Block(width, heads, mlp, "gelu", rng=rng) for _ in range(depth)])
        self.ln = LayerNorm(width)
        self.head = Linear(width, embed_dim, bias=False, rng=rng)

    def tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        if self.tokens == "bytes":
            return byte_tokenize(texts, self.length)
        return word_tokenize(texts, self.length)

    def __call__(self, ids: jax.Array, mask: jax.Array, shift: jax.Array | None = None) -> jax.Array:
        """ids, mask: ``[B, L]`` → ``[B, embed_dim]``; ``shift`` ``[B]`` starts each text's positions there."""
        positions = jnp.arange(ids.shape[1])
        if shift is not None:
            positions = jnp.minimum(jnp.asarray(shift)[:, None] + positions, self.length - 1)
        x = self.token(ids) + self.pos[...][positions]
        mask = jnp.asarray(mask, jnp.bool_)
        for block in self.blocks:
            x = block(x, key_mask=mask)
        m = mask[:, :, None].astype(x.dtype)
        return self.head(self.ln((x * m).sum(1) / m.sum(1)))


# ---------------------------------------------------------------------------------------------------
# CLIP's text tower (Radford et al. 2021), with the module names of Hugging Face's CLIPTextModel


class ClipAttention(nnx.Module):
    def __init__(self, width: int, heads: int, *, rng: np.random.Generator) -> None:
        self.heads = heads
        self.q_proj = Linear(width, width, rng=rng)
        self.k_proj = Linear(width, width, rng=rng)
        self.v_proj = Linear(width, width, rng=rng)
        self.out_proj = Linear(width, width, rng=rng)

    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        b, n, d = x.shape

        def split(y: jax.Array) -> jax.Array:
            return y.reshape(b, n, self.heads, d // self.heads)

        out = attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)), bias)
        return self.out_proj(out.reshape(b, n, d))


class ClipLayer(nnx.Module):
    def __init__(self, width: int, heads: int, mlp: int, act: str, eps: float, *, rng: np.random.Generator) -> None:
        self.layer_norm1 = LayerNorm(width, eps)
        self.self_attn = ClipAttention(width, heads, rng=rng)
        self.layer_norm2 = LayerNorm(width, eps)
        self.mlp = Mlp(width, mlp, act, rng=rng)

    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        x = x + self.self_attn(self.layer_norm1(x), bias)
        return x + self.mlp(self.layer_norm2(x))


class ClipEmbeddings(nnx.Module):
    def __init__(self, vocab: int, positions: int, width: int, *, rng: np.random.Generator) -> None:
        self.token_embedding = Embedding(vocab, width, rng=rng)
        self.position_embedding = Embedding(positions, width, rng=rng)


class ClipEncoder(nnx.Module):
    def __init__(self, layers: list[ClipLayer]) -> None:
        self.layers = nnx.List(layers)


class ClipTextTransformer(nnx.Module):
    """Causal transformer over BPE tokens; the output is the final-normed state at the end-of-text token."""

    def __init__(self, config: Any, *, rng: np.random.Generator) -> None:
        c = config
        if c.hidden_act not in ACTIVATIONS:
            raise UsageError(f"videofirst: CLIP text activation {c.hidden_act!r} is not supported ({', '.join(ACTIVATIONS)})")
        self.eos_token_id = int(c.eos_token_id)
        self.embeddings = ClipEmbeddings(c.vocab_size, c.max_position_embeddings, c.hidden_size, rng=rng)
        self.encoder = ClipEncoder(
            [
                ClipLayer(c.hidden_size, c.num_attention_heads, c.intermediate_size, c.hidden_act, c.layer_norm_eps, rng=rng)
                for _ in range(c.num_hidden_layers)
            ]
        )
        self.final_layer_norm = LayerNorm(c.hidden_size, c.layer_norm_eps)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """input_ids, attention_mask: ``[B, L]`` → pooled ``[B, width]``."""
        b, n = input_ids.shape
        x = self.embeddings.token_embedding(input_ids) + self.embeddings.position_embedding(jnp.arange(n))[None]
        causal = jnp.tril(jnp.ones((n, n), jnp.bool_))[None]
        allowed = causal & jnp.asarray(attention_mask, jnp.bool_)[:, None, :]  # [B, L, L]
        bias = jnp.where(allowed, 0.0, _MASKED)[:, None]  # [B, 1, L, L]
        for layer in self.encoder.layers:
            x = layer(x, bias)
        x = self.final_layer_norm(x)
        # Hugging Face's rule: the first end-of-text token; checkpoints whose eos id is the legacy 2
        # take the largest id instead (OpenAI's vocabulary puts end-of-text last).
        if self.eos_token_id == 2:
            where = jnp.argmax(input_ids, axis=-1)
        else:
            where = jnp.argmax((input_ids == self.eos_token_id).astype(jnp.int32), axis=-1)
        return x[jnp.arange(b), where]


class ClipTextTower(nnx.Module):
    """CLIP's text transformer and projection, with its tokenizer: texts → ``[B, projection_dim]``."""

    def __init__(self, text_config: Any, projection_dim: int, tokenizer: Any, *, rng: np.random.Generator) -> None:
        self.text_model = ClipTextTransformer(text_config, rng=rng)
        self.projection = Linear(text_config.hidden_size, projection_dim, bias=False, rng=rng)
        self.tokenizer = tokenizer
        self.length = int(text_config.max_position_embeddings)

    def tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        return clip_tokenize(self.tokenizer, texts, self.length)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        return self.projection(self.text_model(input_ids, attention_mask))


# ---------------------------------------------------------------------------------------------------
# The dual encoder


class DualEncoder(nnx.Module):
    """A video tower and (optionally) a text tower mapping into one space, with CLIP's learnable temperature."""

    def __init__(self, video: VideoTransformer, text: nnx.Module | None, logit_scale: float = math.log(1 / 0.07)):
        self.video = video
        self.text = text
        self.logit_scale = nnx.Param(jnp.asarray(logit_scale, jnp.float32))

    def encode_text(self, texts: list[str]) -> jax.Array:
        """texts → ``[B, E]`` (not jitted; ``encoder.py`` jits the towers)."""
        if self.text is None:
            raise ValueError("this model has no text tower")
        return self.text(**{k: jnp.asarray(v) for k, v in self.text.tokenize(texts).items()})


# ---------------------------------------------------------------------------------------------------
# The checkpoint's tensors, out of and into a model


def _name(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path)


def state_arrays(model: nnx.Module) -> dict[str, np.ndarray]:
    """Every parameter as ``float32`` numpy, under its checkpoint name (``video.blocks.0.attn.qkv.weight``)."""
    return {
        _name(path): np.asarray(jax.device_get(var.get_value()), dtype=np.float32)
        for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }


def load_arrays(model: nnx.Module, arrays: dict[str, np.ndarray], path: Any = "<arrays>") -> None:
    """Set every parameter of ``model`` from ``arrays`` (in place), refusing with one line naming ``path``
    unless every name and shape fits."""
    state = nnx.state(model, nnx.Param)
    flat = nnx.to_flat_state(state)
    check_tensors({_name(p): tuple(v.shape) for p, v in flat}, arrays, path)
    for p, var in flat:
        var.set_value(jnp.asarray(arrays[_name(p)], jnp.float32))
    nnx.update(model, nnx.from_flat_state(flat))
