"""VideoPrism in Flax NNX, reading the official checkpoint layout as it is.

"VideoPrism: A Foundational Visual Encoder for Video Understanding" (Zhao et al., 2024). The vision tower is
ViViT's factorised encoder (model 2): a ViT over the 18x18 patches of each frame, then a transformer over
time at each patch position. The video-text (LvT) models add auxiliary layers, an attention pooler and a
CoCa-style text tower whose last (class) token is the text embedding.

The module tree *is* the official layout: the parameter at path ``a/b/c`` is the ``.npz`` array
``params/a/b/c``, and a stack's layers share one array with the layer index as its leading axis, scanned
over with ``jax.lax.scan``. What decides parity with the released weights:
- LayerNorm is ``x̂ · (1 + scale) + bias`` with eps 1e-6 (a zero scale is the identity);
- attention logits are soft-capped, ``c · tanh(l / c)`` with c = 50, in every transformer but not the pooler;
- the vision MLPs use the exact (erf) GELU, the text MLPs ReLU;
- the pooler scales its query per dimension by ``softplus(s) / softplus(0) / sqrt(H)``;
- text tokens are embedded times sqrt(D), plus sinusoidal positions, and a class token (also times sqrt(D))
  is appended; the text tower is causal, so the class token reads every valid token;
- embeddings are L2-normalised as ``x / sqrt(|x|² + 1e-12)`` (the port: ``x · rsqrt(|x|² + 1e-6)``; for unit-scale
  embeddings the two differ by less than 1e-6).

The text position table is not stored in the official layout: it is computed with the official timescales
``10^4^(-i / (n - 1))``. transformers' port computes ``10^4^(-i / n)`` and saves its table in its folders, so a
model read from an hf folder uses the table the folder holds: each backend gives the same embeddings as the
other for the same files.

Shapes: B clips, T frames, N patches per frame, D model width, K heads, H head width, S text tokens.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vfeval_videoprism.checkpoint import POOLER_SCALE, Arch, text_positions

EPS = 1e-6
L2_EPS = 1e-12


def _zeros(*shape: int) -> nnx.Param:
    return nnx.Param(jnp.zeros(shape, jnp.float32))


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + EPS) * (1.0 + scale) + bias


def l2_normalize(x: jax.Array) -> jax.Array:
    return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + L2_EPS)


def resize_positions(table: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """A position table ``[*grid, D]`` resized to ``[*shape, D]`` by antialiased bilinear interpolation (the
    official rule for another frame count or resolution); the table itself when the shape is its own."""
    if tuple(table.shape[:-1]) == tuple(shape):
        return table
    return jax.image.resize(table, (*shape, table.shape[-1]), method="bilinear", antialias=True)


# -- blocks ---------------------------------------------------------------------------------------------------


class Norm(nnx.Module):
    def __init__(self, dim: int, lead: tuple[int, ...] = ()) -> None:
        self.scale = _zeros(*lead, dim)
        self.bias = _zeros(*lead, dim)

    def __call__(self, x: jax.Array) -> jax.Array:
        return layer_norm(x, self.scale[...], self.bias[...])


class HeadsProj(nnx.Module):
    """``w: (D, K, H)``, ``b: (K, H)``; the post projection reuses ``w`` as ``(D, K, H)`` with ``b: (D,)``."""

    def __init__(self, dim: int, heads: int, head_dim: int, post: bool, lead: tuple[int, ...] = ()) -> None:
        self.w = _zeros(*lead, dim, heads, head_dim)
        self.b = _zeros(*lead, dim) if post else _zeros(*lead, heads, head_dim)


class Attention(nnx.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, lead: tuple[int, ...] = ()) -> None:
        self.query = HeadsProj(dim, heads, head_dim, False, lead)
        self.key = HeadsProj(dim, heads, head_dim, False, lead)
        self.value = HeadsProj(dim, heads, head_dim, False, lead)
        self.post = HeadsProj(dim, heads, head_dim, True, lead)

    def project(self, x: jax.Array, p: HeadsProj) -> jax.Array:
        """``x: [B, S, D]`` -> ``[B, S, K, H]``."""
        return jnp.einsum("bsd,dkh->bskh", x, p.w[...]) + p.b[...]

    def attend(self, q: jax.Array, x: jax.Array, softcap: float | None, mask: jax.Array | None) -> jax.Array:
        """``q: [B, Q, K, H]`` (already scaled), keys and values from ``x: [B, S, D]`` -> ``[B, Q, D]``.
        ``mask: [B or 1, Q, S]``, True where a query may read a key."""
        k, v = self.project(x, self.key), self.project(x, self.value)
        logits = jnp.einsum("bqkh,bskh->bkqs", q, k)
        if softcap:
            logits = softcap * jnp.tanh(logits / softcap)
        if mask is not None:
            logits = jnp.where(mask[:, None], logits, jnp.finfo(logits.dtype).min)
        out = jnp.einsum("bkqs,bskh->bqkh", jax.nn.softmax(logits, axis=-1), v)
        return jnp.einsum("bqkh,dkh->bqd", out, self.post.w[...]) + self.post.b[...]

    def __call__(self, x: jax.Array, softcap: float | None, mask: jax.Array | None) -> jax.Array:
        q = self.project(x, self.query)
        return self.attend(q * (q.shape[-1] ** -0.5), x, softcap, mask)


class Linear(nnx.Module):
    def __init__(self, d_in: int, d_out: int, lead: tuple[int, ...] = ()) -> None:
        self.kernel = _zeros(*lead, d_in, d_out)
        self.bias = _zeros(*lead, d_out)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.kernel[...] + self.bias[...]


class FFN(nnx.Module):
    def __init__(self, d_in: int, d_out: int, lead: tuple[int, ...] = ()) -> None:
        self.linear = Linear(d_in, d_out, lead)


class FeedForward(nnx.Module):
    def __init__(self, dim: int, mlp: int, lead: tuple[int, ...] = ()) -> None:
        self.layer_norm = Norm(dim, lead)
        self.ffn_layer1 = FFN(dim, mlp, lead)
        self.ffn_layer2 = FFN(mlp, dim, lead)


class Layer(nnx.Module):
    """A pre-norm transformer layer; built with ``lead=(L,)`` it holds a whole stack's parameters."""

    def __init__(self, dim: int, mlp: int, heads: int, lead: tuple[int, ...] = ()) -> None:
        self.layer_norm = Norm(dim, lead)
        self.self_attention = Attention(dim, heads, dim // heads, lead)
        self.ff_layer = FeedForward(dim, mlp, lead)

    def __call__(self, x: jax.Array, act: str, softcap: float | None, mask: jax.Array | None) -> jax.Array:
        x = x + self.self_attention(self.layer_norm(x), softcap, mask)
        ff = self.ff_layer
        h = ff.ffn_layer1.linear(ff.layer_norm(x))
        h = jax.nn.gelu(h, approximate=False) if act == "gelu" else jax.nn.relu(h)
        return x + ff.ffn_layer2.linear(h)


class Stack(nnx.Module):
    """``depth`` layers whose parameters share arrays with a leading layer axis (``x_layers``)."""

    def __init__(self, depth: int, dim: int, mlp: int, heads: int) -> None:
        self.x_layers = Layer(dim, mlp, heads, lead=(depth,))

    def __call__(self, x: jax.Array, act: str, softcap: float | None, mask: jax.Array | None = None) -> jax.Array:
        graph, params = nnx.split(self.x_layers)

        def step(h: jax.Array, layer_params) -> tuple[jax.Array, None]:
            return nnx.merge(graph, layer_params)(h, act, softcap, mask), None

        return jax.lax.scan(step, x, params)[0]


class TransformersStack(nnx.Module):
    """The official nesting ``<name>/transformers_stack/x_layers``."""

    def __init__(self, depth: int, dim: int, mlp: int, heads: int) -> None:
        self.transformers_stack = Stack(depth, dim, mlp, heads)

    def __call__(self, x: jax.Array, softcap: float | None) -> jax.Array:
        return self.transformers_stack(x, "gelu", softcap)


class Embedding(nnx.Module):
    def __init__(self, rows: int, dim: int) -> None:
        self.emb_var = _zeros(rows, dim)


# -- towers ---------------------------------------------------------------------------------------------------


class FactorizedEncoder(nnx.Module):
    """The vision tower: ``[B, T, H, W, 3]`` in [0, 1] -> tokens ``[B, T * N, D]`` (time-major)."""

    def __init__(self, arch: Arch) -> None:
        d, p = arch.hidden, arch.patch
        self.arch = arch
        self.patch_projection = FFN(p * p * 3, d)
        self.spatial_pos_emb = Embedding(arch.grid[0] * arch.grid[1], d)
        self.temporal_pos_emb = Embedding(arch.frames, d)
        self.spatial_encoder = TransformersStack(arch.spatial_layers, d, arch.mlp, arch.heads)
        self.spatial_ln = Norm(d)
        self.temporal_encoder = TransformersStack(arch.temporal_layers, d, arch.mlp, arch.heads)
        self.temporal_ln = Norm(d)

    def __call__(self, video: jax.Array) -> jax.Array:
        a = self.arch
        b, t, h, w, c = video.shape
        gh, gw, p = h // a.patch, w // a.patch, a.patch
        # Patches flattened in (row, column, channel) order, the projection kernel's row order.
        x = video.reshape(b * t, gh, p, gw, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b * t, gh * gw, p * p * c)
        x = self.patch_projection.linear(x)
        spatial = self.spatial_pos_emb.emb_var[...].reshape(*a.grid, -1)
        x = x + resize_positions(spatial, (gh, gw)).reshape(gh * gw, -1)
        x = self.spatial_ln(self.spatial_encoder(x, a.softcap))
        n, d = gh * gw, x.shape[-1]
        x = x.reshape(b, t, n, d).transpose(0, 2, 1, 3).reshape(b * n, t, d)
        x = x + resize_positions(self.temporal_pos_emb.emb_var[...], (t,))
        x = self.temporal_ln(self.temporal_encoder(x, a.softcap))
        return x.reshape(b, n, t, d).transpose(0, 2, 1, 3).reshape(b, t * n, d)


class PerDimScale(nnx.Module):
    def __init__(self, dim: int) -> None:
        self.per_dim_scale = _zeros(dim)


class PoolingAttention(Attention):
    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__(dim, heads, head_dim)
        self.per_dim_scale = PerDimScale(head_dim)


class AttentionPooler(nnx.Module):
    """One learned query attends over the tokens: ``[B, S, D]`` -> ``[B, D]``."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        self.pooling_attention = PoolingAttention(dim, heads, head_dim)
        self.pooling_attention_layer_norm = Norm(dim)
        self.pooling_attention_query = _zeros(1, dim)

    def __call__(self, x: jax.Array) -> jax.Array:
        att = self.pooling_attention
        query = jnp.broadcast_to(self.pooling_attention_query[...], (x.shape[0], 1, x.shape[-1]))
        q = att.project(query, att.query)
        scale = POOLER_SCALE / math.sqrt(q.shape[-1]) * jax.nn.softplus(att.per_dim_scale.per_dim_scale[...])
        out = att.attend(q * scale, x, None, None)[:, 0]
        return self.pooling_attention_layer_norm(out)


class TextEncoder(nnx.Module):
    """Token ids ``[B, S]`` and validity ``[B, S]`` -> features ``[B, S + 1, D]`` (class token last)."""

    def __init__(self, arch: Arch, positions: np.ndarray | None = None) -> None:
        t = arch.text
        self.arch = arch
        self.token_emb = Embedding(t.vocab, t.hidden)
        self.cls_emb = _zeros(1, 1, t.hidden)
        self.unimodal_transformer = Stack(t.layers, t.hidden, t.mlp, t.heads)
        self.unimodal_ln = Norm(t.hidden)
        table = positions if positions is not None else text_positions(t.max_length, t.hidden)
        self.positions = nnx.Variable(jnp.asarray(table, jnp.float32))
        """Not learned: the official formula's table, or the one an hf folder carries."""

    def __call__(self, ids: jax.Array, valid: jax.Array) -> jax.Array:
        b, s = ids.shape
        d = self.arch.text.hidden
        x = self.token_emb.emb_var[...][ids] * math.sqrt(d) + self.positions[...][:s]
        cls = jnp.broadcast_to(self.cls_emb[...] * math.sqrt(d), (b, 1, d))
        x = jnp.concatenate([x, cls], axis=1)
        keys = jnp.concatenate([valid.astype(bool), jnp.ones((b, 1), bool)], axis=1)
        causal = jnp.tril(jnp.ones((s + 1, s + 1), bool))
        mask = causal[None] & keys[:, None, :]
        x = self.unimodal_transformer(x, "relu", self.arch.text.softcap, mask)
        return self.unimodal_ln(x)


class VideoPrismLvT(nnx.Module):
    """The video-text model: unit video and text embeddings in one space."""

    def __init__(self, arch: Arch, positions: np.ndarray | None = None) -> None:
        self.arch = arch
        self.vision_encoder = FactorizedEncoder(arch)
        self.auxiliary_encoder = TransformersStack(arch.aux_layers, arch.hidden, arch.mlp, arch.heads)
        self.contrastive_vision_pooler = AttentionPooler(arch.hidden, arch.pooler_heads, arch.pooler_head_dim)
        self.text_encoder = TextEncoder(arch, positions)

    def embed_video(self, video: jax.Array) -> jax.Array:
        tokens = self.auxiliary_encoder(self.vision_encoder(video), self.arch.softcap)
        return l2_normalize(self.contrastive_vision_pooler(tokens))

    def embed_text(self, ids: jax.Array, valid: jax.Array) -> jax.Array:
        return l2_normalize(self.text_encoder(ids, valid)[:, -1])


class VideoPrismVideo(FactorizedEncoder):
    """A video-only checkpoint: its embedding is the mean of its spatio-temporal tokens (for probes)."""

    def embed_video(self, video: jax.Array) -> jax.Array:
        return self(video).mean(axis=1)


# -- building and loading -------------------------------------------------------------------------------------


def build(arch: Arch, positions: np.ndarray | None = None) -> VideoPrismLvT | VideoPrismVideo:
    return VideoPrismLvT(arch, positions) if arch.lvt else VideoPrismVideo(arch)


def _params(model: nnx.Module) -> dict[str, nnx.Variable]:
    return {"params/" + "/".join(map(str, path)): var
            for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def load_official(model: nnx.Module, params: dict[str, np.ndarray]) -> None:
    """Set every parameter from the official arrays (same keys, same shapes); anything missing or left over
    is an error, so a checkpoint is never half-loaded."""
    from vfeval.errors import UsageError

    slots = _params(model)
    missing, extra = sorted(set(slots) - set(params)), sorted(set(params) - set(slots))
    if missing or extra:
        raise UsageError(f"videoprism: checkpoint does not fit the model: missing {missing[:3]}, unexpected {extra[:3]}")
    for key, var in slots.items():
        value = params[key]
        shape = var.get_value().shape
        if value.shape != shape:
            raise UsageError(f"videoprism: {key} has shape {value.shape}, the model expects {shape}")
        var.set_value(jnp.asarray(value, jnp.float32))


def random_official(arch: Arch, seed: int = 0) -> dict[str, np.ndarray]:
    """Random official-layout arrays for ``arch`` (benchmarks: shapes and speed, never scores)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, var in _params(build(arch)).items():
        shape = var.get_value().shape
        fan_in = shape[-3] if key.endswith("/w") else shape[-2] if len(shape) >= 2 else 1
        out[key] = (rng.standard_normal(shape) / math.sqrt(max(fan_in, 1))).astype(np.float32)
    return out
