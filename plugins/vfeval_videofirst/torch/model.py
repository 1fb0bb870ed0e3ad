"""The masked video-first dual encoder: a video transformer over space-time tubelets plus a text tower.

Papers:
- ViViT (Arnab et al., 2021, "ViViT: A Video Vision Transformer"): tubelet embedding, joint space-time
  attention, and factorising attention into spatial then temporal steps.
- LongViViT (Papalampidi et al., 2024, "A Simple Recipe for Contrastively Pre-training Video-First
  Encoders Beyond 16 Frames"): joint space-time attention, up to 75% of the input tokens dropped while
  training, initialised from an image-text model, trained contrastively against text.
- MAE (He et al., 2022): dropped tokens never enter the transformer, which is where the saving comes from.
- VIMPAC (Tan et al., 2021): block masks (see ``vfeval_videofirst/masking.py``).

Masks, tokenizers and the checkpoint layout are backend-neutral (``vfeval_videofirst/masking.py``,
``tokenizers.py``, ``checkpoint.py``); ``jax/model.py`` is this file's block-for-block twin.

Token layout. A clip ``[B, 3, T, H, W]`` becomes ``nt x nh x nw`` patch tokens (flattened slice-major),
each with a spatial and a temporal position embedding added by broadcasting. The temporal table starts at
zero, so a fresh model treats every slice alike, and it is resampled linearly for clips of another length.

Class tokens. There is one class token per temporal slice and the video embedding is the mean of their
outputs (``pool="cls"``). This is what makes inflation from CLIP exact: on a static video with zero
temporal embeddings, the joint sequence is ``nt`` copies of CLIP's image sequence ``[cls, patches]``.
Softmax attention over a key set in which *every* key appears ``nt`` times gives the same output as over
one copy (numerator and denominator both scale by ``nt``), so every class token comes out as CLIP's and
their mean, after CLIP's final norm and projection, is CLIP's image embedding. A single shared class
token would break this: it would be one key against ``nt`` copies of each patch and lose attention mass.
``pool="mean"`` pools the kept patch tokens instead (ViViT's choice when training from scratch).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vfeval_videofirst import tokenizers
from vfeval_videofirst.masking import draw_keep, masking_on
from vfeval_videofirst.tokenizers import WORD, WORD_BUCKETS  # noqa: F401  (re-exported for callers)

# ---------------------------------------------------------------------------------------------------
# Helpers


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """The sigmoid approximation of GELU that OpenAI's CLIP was trained with."""
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"gelu": F.gelu, "quick_gelu": quick_gelu}


def resample_time(pos: torch.Tensor, n: int) -> torch.Tensor:
    """Temporal position embeddings ``[nt, D]`` → ``[n, D]`` by linear interpolation (unchanged if n == nt)."""
    if pos.shape[0] == n:
        return pos
    return F.interpolate(pos.T[None], size=n, mode="linear", align_corners=False)[0].T


def init_weights(module: nn.Module) -> None:
    """ViT-style initialisation for training from scratch (inflation overwrites it)."""
    if isinstance(module, (nn.Linear, nn.Conv3d, nn.Embedding)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)


# ---------------------------------------------------------------------------------------------------
# Blocks


class TubeletEmbed(nn.Module):
    """Non-overlapping t x h x w tubelets → tokens: a Conv3d whose kernel equals its stride."""

    def __init__(self, tubelet: tuple[int, int, int], width: int) -> None:
        super().__init__()
        # No bias: a LayerNorm follows, and CLIP's patch embedding (inflated into this one) has none.
        self.proj = nn.Conv3d(3, width, kernel_size=tubelet, stride=tubelet, bias=False)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """video: ``[B, 3, T, H, W]`` → ``[B, nt, nh, nw, D]``."""
        return self.proj(video).permute(0, 2, 3, 4, 1)

    def kept(self, video: torch.Tensor, keep: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """The tokens of the kept tubelets alone, ``[B, N_keep, D]`` in the order of ``keep`` (indices into the
        ``grid`` = (nt, nh, nw) tubelets, slice-major): each kept tubelet's pixels are gathered and projected by
        the same kernel, so a masked tubelet is never embedded. ``forward`` then ``gather`` computes the same
        tokens, but embeds every tubelet first: at 75% masking four times the work, and an output for every
        tubelet. The gathered pixels are not held for the backward pass (the kernel's gradient gathers them
        again from the clip, which the step holds anyway), as the convolution holds nothing but its input."""
        if video.requires_grad:  # pixels that learn: plain autograd through the gather
            return kept_pixels(video, keep, grid, self.proj.kernel_size) @ self.proj.weight.flatten(1).T
        return _ProjectKept.apply(self.proj.weight, video, keep, grid)


def kept_pixels(video: torch.Tensor, keep: torch.Tensor, grid: tuple[int, int, int],
                tubelet: tuple[int, int, int]) -> torch.Tensor:
    """``[B, N_keep, 3 * t * h * w]``: the pixels of the kept tubelets, each flattened as a Conv3d kernel is."""
    b, c = video.shape[:2]
    nt, nh, nw = grid
    t, h, w = tubelet
    # A view that splits each axis into (tubelet index, offset in the tubelet); like the convolution, frames or
    # pixels beyond the last whole tubelet are left out.
    v = video[:, :, : nt * t, : nh * h, : nw * w].reshape(b, c, nt, t, nh, h, nw, w)
    it, rest = keep // (nh * nw), keep % (nh * nw)
    rows = torch.arange(b, device=keep.device)[:, None]
    return v[rows, :, it, :, rest // nw, :, rest % nw, :].reshape(b, keep.shape[1], -1)  # only kept pixels copied


class _ProjectKept(torch.autograd.Function):
    """``kept_pixels(video, ...) @ kernel``, whose backward gathers the pixels again instead of saving them."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, video: torch.Tensor, keep: torch.Tensor,
                grid: tuple[int, int, int]) -> torch.Tensor:
        ctx.save_for_backward(weight, video, keep)
        ctx.grid = grid
        return kept_pixels(video, keep, grid, tuple(weight.shape[2:])) @ weight.flatten(1).T

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        weight, video, keep = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        pixels = kept_pixels(video, keep, ctx.grid, tuple(weight.shape[2:])).flatten(0, 1).to(grad.dtype)
        grad_weight = grad.flatten(0, 1).T @ pixels  # [D, 3 * t * h * w]
        return grad_weight.reshape(weight.shape).to(weight.dtype), None, None, None


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``, which picks a fused kernel
    (flash or memory-efficient) that never materialises the N x N matrix: 30k+ tokens fit."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: ``[B, N, D]``; key_mask: ``[B, N]`` bool, True for real tokens (None: all real) → ``[B, N, D]``."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, heads, N, D/heads]
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int, act: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.act = ACTIVATIONS[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, width: int, heads: int, mlp: int, act: str) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, mlp, act)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: ``[B, N, D]`` → ``[B, N, D]``."""
        x = x + self.attn(self.ln1(x), key_mask)
        return x + self.mlp(self.ln2(x))


class TemporalGate(nn.Module):
    """Attention along time for each spatial position: ``h + tanh(alpha) * attn(ln(h))``.

    alpha starts at 0, so a fresh gate is the identity and a factorised model inflated from an image model
    is that image model, frame by frame, until training opens the gate (the Flamingo-style gating).
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: ``[B * positions, nt, D]`` → same shape."""
        return h + torch.tanh(self.alpha) * self.attn(self.ln(h))


# ---------------------------------------------------------------------------------------------------
# The video transformer


class VideoTransformer(nn.Module):
    """Tubelets → (masked) tokens → joint or factorised transformer → pooled, projected embedding.

    ``grid`` is (nt, nh, nw) of the clip length the temporal table is laid out for. Masking is applied
    while training, or also in eval mode when ``mask_at_eval``.
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
    ) -> None:
        super().__init__()
        nt, nh, nw = grid
        self.attention, self.pool = attention, pool
        self.mask, self.mask_ratio, self.mask_at_eval = mask, mask_ratio, mask_at_eval
        self.embed = TubeletEmbed(tubelet, width)
        self.cls = nn.Parameter(torch.zeros(width))
        self.pos_cls = nn.Parameter(torch.zeros(width))
        self.pos_space = nn.Parameter(torch.zeros(nh * nw, width))
        self.pos_time = nn.Parameter(torch.zeros(nt, width))  # zero: no slice is told apart at first
        self.ln_pre = nn.LayerNorm(width)  # CLIP normalises the embedded tokens before the blocks
        self.blocks = nn.ModuleList(Block(width, heads, mlp, act) for _ in range(depth))
        if attention == "factorised":
            self.temporal = nn.ModuleList(TemporalGate(width, heads) for _ in range(depth))
        self.ln_post = nn.LayerNorm(width)
        self.head = nn.Linear(width, embed_dim, bias=False)

        self.apply(init_weights)
        for p in (self.cls, self.pos_cls, self.pos_space):
            nn.init.trunc_normal_(p, std=0.02)

    # -- masking --------------------------------------------------------------------------------------
    def masking(self) -> bool:
        """Whether a forward pass in the current mode drops tokens."""
        return masking_on(self.mask, self.mask_ratio, self.training, self.mask_at_eval)

    def draw_keep(
        self, batch: int, grid: tuple[int, int, int], generator: np.random.Generator
    ) -> torch.Tensor | None:
        """Kept patch-token indices ``[B, N_keep]`` for clips of token grid ``grid``, drawn with numpy
        (``vfeval_videofirst.masking``: the JAX twin draws the same from the same seed), on the model's
        device; None when not masking."""
        if not self.masking():
            return None
        keep = draw_keep(self.mask, self.mask_ratio, batch, grid, generator)
        return torch.from_numpy(keep).to(self.pos_space.device)

    # -- forward --------------------------------------------------------------------------------------
    def tokens(
        self, video: torch.Tensor, keep: torch.Tensor | None = None, generator: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, int]:
        """The sequence that enters the transformer, class tokens first, then the kept patch tokens.

        video: ``[B, 3, T, H, W]`` (normalised); keep: ``[B, N_keep]`` indices into the nt*nh*nw patch tokens,
        or None to draw them from ``generator`` when masking is on (and keep all tokens when it is off).
        Returns ``(x, nt)``: joint ``x`` is ``[B, nt + N_keep, D]``, factorised ``[B, nt, 1 + N_keep / nt, D]``.
        """
        b = video.shape[0]
        t, h, w = self.embed.proj.kernel_size
        nt, nh, nw = video.shape[2] // t, video.shape[3] // h, video.shape[4] // w
        d = self.pos_space.shape[1]
        if nh * nw != self.pos_space.shape[0]:
            raise ValueError(
                f"frames give {nh}x{nw} patches; the model was built for {self.pos_space.shape[0]}"
            )
        if keep is None and self.masking():
            if generator is None:
                raise ValueError("masking is on: pass a numpy Generator (or explicit keep indices)")
            keep = self.draw_keep(b, (nt, nh, nw), generator)
        pos_time = resample_time(self.pos_time, nt)[:, None]  # [nt, 1, D]
        pos = (self.pos_space + pos_time).reshape(nt * nh * nw, d)  # [N, D]
        if keep is None:
            x = self.embed(video).reshape(b, nt * nh * nw, d) + pos  # [B, N, D]
        else:  # only kept tokens are embedded, and only they go any further
            x = self.embed.kept(video, keep, (nt, nh, nw)) + pos[keep]  # [B, N_keep, D]
        cls = (self.cls + self.pos_cls + pos_time[:, 0]).expand(b, nt, d)  # one per slice, never masked
        if self.attention == "factorised":
            # Tube masks keep the same positions in every slice, so the kept tokens form a [nt, S_keep] grid.
            return torch.cat([cls[:, :, None], x.reshape(b, nt, -1, d)], dim=2), nt
        return torch.cat([cls, x], dim=1), nt

    def encode(
        self, video: torch.Tensor, keep: torch.Tensor | None = None, generator: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, int]:
        """The transformer's output sequence, laid out as ``tokens`` returns its input: ``(x, nt)``.

        ``embedding`` pools it into the video embedding, ``patch_tokens`` reads out the (kept) patch tokens:
        masked distillation (``vfeval_videofirst.distill``) needs both from one pass."""
        x, nt = self.tokens(video, keep, generator)
        x = self.ln_pre(x)
        if self.attention == "factorised":
            b, _, n, d = x.shape
            for block, gate in zip(self.blocks, self.temporal, strict=True):
                x = block(x.reshape(b * nt, n, d)).reshape(b, nt, n, d)  # space: each slice on its own
                x = x.transpose(1, 2).reshape(b * n, nt, d)  # time: each position on its own
                x = gate(x).reshape(b, n, nt, d).transpose(1, 2)
        else:
            for block in self.blocks:
                x = block(x)
        return x, nt

    def embedding(self, x: torch.Tensor, nt: int) -> torch.Tensor:
        """``encode``'s output → the pooled, projected video embedding ``[B, embed_dim]``."""
        if self.attention == "factorised":
            pooled = x[:, :, 0].mean(1) if self.pool == "cls" else x[:, :, 1:].mean((1, 2))
        else:
            pooled = x[:, :nt].mean(1) if self.pool == "cls" else x[:, nt:].mean(1)
        return self.head(self.ln_post(pooled))

    def patch_tokens(self, x: torch.Tensor, nt: int) -> torch.Tensor:
        """``encode``'s output → the patch tokens after the final norm, ``[B, N_keep, D]`` in the order of
        ``keep`` (slice-major, as the masks index them); class tokens left out."""
        if self.attention == "factorised":
            return self.ln_post(x[:, :, 1:].flatten(1, 2))
        return self.ln_post(x[:, nt:])

    def forward(
        self, video: torch.Tensor, keep: torch.Tensor | None = None, generator: np.random.Generator | None = None
    ) -> torch.Tensor:
        """video: ``[B, 3, T, H, W]`` → ``[B, embed_dim]``; ``keep`` and ``generator`` as in ``tokens``."""
        return self.embedding(*self.encode(video, keep, generator))


# ---------------------------------------------------------------------------------------------------
# A small text tower for training from scratch


def _tensors(tokens: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in tokens.items()}


def byte_tokenize(texts: list[str], length: int) -> dict[str, torch.Tensor]:
    """``tokenizers.byte_tokenize`` as torch tensors: ``ids``/``mask`` ``[B, L]``."""
    return _tensors(tokenizers.byte_tokenize(texts, length))


def word_tokenize(texts: list[str], length: int, buckets: int = WORD_BUCKETS) -> dict[str, torch.Tensor]:
    """``tokenizers.word_tokenize`` (hashed words) as torch tensors: ``ids``/``mask`` ``[B, L]``."""
    return _tensors(tokenizers.word_tokenize(texts, length, buckets))


def shifted_positions(
    mask: torch.Tensor, length: int, generator: torch.Generator | np.random.Generator
) -> torch.Tensor:
    """``int64 [B]``: for each text (``mask`` ``[B, L]``) a start position drawn uniformly from those that keep
    it inside a table of ``length`` positions. With a numpy generator the draws are
    ``tokenizers.shifted_positions``'s, which the JAX trainer makes too.

    Randomised positions (after Ruoss et al. 2023): trained at one offset, a text tower with absolute
    position embeddings reads "red" at position 12 as something else than at position 8, so the same
    words after a longer prefix (a question instead of a caption's opening) mean another order. Drawn
    offsets make only the relative arrangement of the words carry meaning.
    """
    if isinstance(generator, np.random.Generator):
        shift = tokenizers.shifted_positions(mask.cpu().numpy(), length, generator)
        return torch.from_numpy(shift).to(mask.device)
    room = (length - mask.sum(1)).clamp(min=0)
    return (torch.rand(len(mask), generator=generator, device=mask.device) * (room + 1)).long().clamp(max=room)


class SmallTextTower(nn.Module):
    """Tokens → embeddings + positions → a few pre-LN blocks → mean over real tokens → norm → projection.

    The tokens are UTF-8 bytes (``tokens="bytes"``) or hashed words (``tokens="words"``, see
    ``word_tokenize``). The start token means no text is empty, so the mean is always defined.
    """

    def __init__(
        self, *, width: int, depth: int, heads: int, mlp: int, embed_dim: int, length: int, tokens: str = "bytes"
    ) -> None:
        super().__init__()
        self.length = length
        self.tokens = tokens
        self.token = nn.Embedding(258 if tokens == "bytes" else WORD_BUCKETS, width)
        self.pos = nn.Parameter(torch.zeros(length, width))
        self.blocks = nn.ModuleList(Block(width, heads, mlp, "gelu") for _ in range(depth))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, embed_dim, bias=False)
        self.apply(init_weights)
        # Unit-variance token embeddings (PyTorch's default for nn.Embedding), not ViT's 0.02. Adam moves a
        # row by about lr per step whatever its size, so a table of 0.02 is rewritten within a few steps,
        # and early on, while the video side knows nothing, the contrastive loss rewrites every text
        # towards one vector: from scratch the loss then sat at ln(batch) for 800+ steps. Rows of unit
        # variance move slowly relative to their size, and the same run leaves that plateau in ~300 steps.
        nn.init.normal_(self.token.weight)
        nn.init.trunc_normal_(self.pos, std=0.02)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if self.tokens == "bytes":
            return byte_tokenize(texts, self.length)
        return word_tokenize(texts, self.length)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        """ids, mask: ``[B, L]`` → ``[B, embed_dim]``. ``shift`` ``[B]`` (training only): start each text's
        positions there instead of at 0 (``shifted_positions``)."""
        positions = torch.arange(ids.shape[1], device=ids.device)
        if shift is None:
            x = self.token(ids) + self.pos[positions]
        else:
            x = self.token(ids) + self.pos[(shift[:, None] + positions).clamp(max=self.length - 1)]
        for block in self.blocks:
            x = block(x, key_mask=mask)
        m = mask[:, :, None].to(x.dtype)
        return self.head(self.ln((x * m).sum(1) / m.sum(1)))


# ---------------------------------------------------------------------------------------------------
# The dual encoder and its loss


class DualEncoder(nn.Module):
    """A video tower and (optionally) a text tower mapping into one space, with CLIP's learnable temperature.

    A text tower is any module with ``tokenize(texts) -> dict of tensors`` and ``forward(**tokens) -> [B, E]``.
    """

    def __init__(
        self, video: VideoTransformer, text: nn.Module | None, logit_scale: float = math.log(1 / 0.07)
    ):
        super().__init__()
        self.video = video
        self.text = text
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """texts → ``[B, E]`` on the model's device."""
        if self.text is None:
            raise ValueError("this model has no text tower")
        device = self.logit_scale.device
        return self.text(**{k: v.to(device) for k, v in self.text.tokenize(texts).items()})


def contrastive_loss(video: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matching pairs. video, text: ``[B, E]`` → scalar."""
    video, text = F.normalize(video, dim=-1), F.normalize(text, dim=-1)
    logits = logit_scale.exp() * video @ text.T  # [B, B], matches on the diagonal
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
