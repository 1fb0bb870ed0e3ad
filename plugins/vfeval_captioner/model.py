"""The video-to-text model: frozen video-first encoder → Perceiver resampler → gated cross-attention in a frozen LM.

Papers:
- Flamingo (Alayrac et al., 2022, "Flamingo: a Visual Language Model for Few-Shot Learning"): the Perceiver
  resampler turns a variable number of visual tokens into a fixed number of latents; "gated xattn-dense"
  blocks, inserted before the frozen LM's layers, let text attend to them, each output scaled by
  ``tanh(alpha)`` with ``alpha`` initialised at 0, so that at initialisation the model *is* the frozen LM.
- LongViViT (Papalampidi et al., 2024, "A Simple Recipe for Contrastively Pre-training Video-First Encoders
  Beyond 16 Frames"): this bridge on top of its frozen video-first encoder for captioning and video
  summaries, trained on captions with part of the video input masked.

What is read from the video. Every output token of the encoder after its final norm
(``VideoTransformer.encode``): the class token of each temporal slice and the patch tokens, all of them or
only the kept ones when masking. They carry the space-time position embeddings the encoder added, so the
resampler needs no time embedding of its own (Flamingo adds one because its vision encoder sees frames one
at a time).

Where the blocks go. Each chosen decoder layer of the LM is wrapped (``GatedLayer``): the wrapper applies
its cross-attention block to the hidden states, then calls the LM's own layer with every argument unchanged,
so the LM's attention, its KV cache and its positions are the LM's. The latents reach the wrappers through
one shared ``MediaSlot`` set for the duration of an LM call (``Captioner.lm_forward``).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vfeval.errors import UsageError

LAYER_PATHS = ("transformer.h", "model.layers", "gpt_neox.layers", "model.decoder.layers", "transformer.layers")
"""Where Hugging Face causal LMs keep their decoder layers (GPT-2, Llama/Mistral/Qwen, GPT-NeoX, OPT, ...)."""


def _split(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[B, N, D]`` → ``[B, heads, N, D / heads]``."""
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """``[B, heads, N, d]`` → ``[B, N, heads * d]``."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class FeedForward(nn.Sequential):
    """Flamingo's feed-forward: LayerNorm, Linear to ``mult x width``, GELU, Linear back (no biases)."""

    def __init__(self, width: int, mult: int) -> None:
        super().__init__(nn.LayerNorm(width), nn.Linear(width, width * mult, bias=False), nn.GELU(),
                         nn.Linear(width * mult, width, bias=False))


class PerceiverAttention(nn.Module):
    """Latents attend to the visual tokens and to themselves (keys and values from both, queries from the
    latents), each input with its own LayerNorm."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_media = nn.LayerNorm(width)
        self.ln_latents = nn.LayerNorm(width)
        self.q = nn.Linear(width, width, bias=False)
        self.kv = nn.Linear(width, 2 * width, bias=False)
        self.out = nn.Linear(width, width, bias=False)

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """media ``[B, N, D]``, latents ``[B, L, D]`` → ``[B, L, D]``."""
        m, lat = self.ln_media(media), self.ln_latents(latents)
        k, v = self.kv(torch.cat([m, lat], dim=1)).chunk(2, dim=-1)
        q = self.q(lat)
        x = F.scaled_dot_product_attention(_split(q, self.heads), _split(k, self.heads), _split(v, self.heads))
        return self.out(_merge(x))


class PerceiverResampler(nn.Module):
    """Any number of visual tokens ``[B, N, D]`` → ``num_latents`` latents ``[B, L, D]`` (Flamingo, section 2.1)."""

    def __init__(self, width: int, depth: int, heads: int, num_latents: int, ff_mult: int) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, width))  # Flamingo's: unit normal
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(width, heads), FeedForward(width, ff_mult)]) for _ in range(depth)
        )
        self.ln = nn.LayerNorm(width)

    def forward(self, media: torch.Tensor) -> torch.Tensor:
        latents = self.latents.expand(media.shape[0], -1, -1)
        for attn, ff in self.layers:
            latents = latents + attn(media, latents)
            latents = latents + ff(latents)
        return self.ln(latents)


class GatedCrossAttention(nn.Module):
    """Flamingo's gated xattn-dense block: ``x + tanh(a) * xattn(ln(x), latents)``, then
    ``x + tanh(b) * ff(x)``, with ``a`` and ``b`` starting at 0: a fresh block returns ``x`` exactly."""

    def __init__(self, width: int, media_width: int, heads: int, ff_mult: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln = nn.LayerNorm(width)
        self.q = nn.Linear(width, width, bias=False)
        self.kv = nn.Linear(media_width, 2 * width, bias=False)
        self.out = nn.Linear(width, width, bias=False)
        self.attn_gate = nn.Parameter(torch.zeros(()))
        self.ff = FeedForward(width, ff_mult)
        self.ff_gate = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, media: torch.Tensor) -> torch.Tensor:
        """x ``[B, T, W]`` (text), media ``[B, L, D]`` (latents) → ``[B, T, W]``. Every text token sees every
        latent: one video per sequence, so Flamingo's per-image masking has nothing to choose."""
        k, v = self.kv(media).chunk(2, dim=-1)
        q = self.q(self.ln(x))
        a = F.scaled_dot_product_attention(_split(q, self.heads), _split(k, self.heads), _split(v, self.heads))
        x = x + torch.tanh(self.attn_gate) * self.out(_merge(a))
        return x + torch.tanh(self.ff_gate) * self.ff(x)


class MediaSlot:
    """The latents the wrapped layers attend to during one LM call (None outside one: the plain LM)."""

    def __init__(self) -> None:
        self.media: torch.Tensor | None = None


class GatedLayer(nn.Module):
    """One LM decoder layer with a gated cross-attention block in front of it; every argument of the layer
    passes through unchanged, and attributes the LM reads from its layers are the layer's."""

    def __init__(self, layer: nn.Module, xattn: GatedCrossAttention, slot: MediaSlot) -> None:
        super().__init__()
        self.layer = layer
        self.xattn = xattn
        self.slot = slot

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        media = self.slot.media
        if media is not None:
            # The bridge computes in float32 whatever the LM's dtype; a zero gate gives the states back bit for bit.
            hidden_states = self.xattn(hidden_states.float(), media).to(hidden_states.dtype)
        return self.layer(hidden_states, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["layer"], name)


def decoder_layers(lm: nn.Module) -> nn.ModuleList:
    """The LM's list of decoder layers: at a known place, else the one ModuleList as long as the layer count."""
    n = getattr(lm.config, "num_hidden_layers", None)
    for path in LAYER_PATHS:
        obj: Any = lm
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.ModuleList) and len(obj) == n:
            return obj
    found = [m for m in lm.modules() if isinstance(m, nn.ModuleList) and len(m) == n]
    if len(found) != 1:
        raise UsageError(f"videofirst-captioner: cannot tell which modules of {type(lm).__name__} are its decoder "
                         "layers; use a GPT-2, Llama-family, GPT-NeoX or OPT causal LM")
    return found[0]


class Bridge(nn.Module):
    """What the captioner learns: the resampler and the cross-attention blocks (its checkpoint's tensors)."""

    def __init__(self, video_width: int, lm_width: int, n_blocks: int, cfg: Any) -> None:
        super().__init__()
        for width, what in ((video_width, "the video encoder's width"), (lm_width, "the LM's hidden size")):
            if width % cfg.heads:
                raise UsageError(f"config: 'heads' is {cfg.heads}, which does not divide {what} ({width})")
        self.resampler = PerceiverResampler(video_width, cfg.resampler_depth, cfg.heads, cfg.num_latents,
                                            cfg.ff_mult)
        # PyTorch's default initialisation of the linear layers (as OpenFlamingo keeps it): with GPT-style
        # 0.02 weights the queries and keys of this small bridge start so small that every latent attends
        # evenly to every token, and a short training run never leaves that average.
        self.xattn = nn.ModuleList(
            GatedCrossAttention(lm_width, video_width, cfg.heads, cfg.ff_mult) for _ in range(n_blocks)
        )


class Captioner(nn.Module):
    """Frozen ``video`` (a ``VideoTransformer``) and frozen ``lm`` (a Hugging Face causal LM), bridged.

    The frozen parts never leave eval mode (no dropout in the LM, whatever ``train()`` says) and never need
    gradients; only ``bridge`` does.
    """

    def __init__(self, video: nn.Module, lm: nn.Module, cfg: Any) -> None:
        super().__init__()
        video.requires_grad_(False)
        lm.requires_grad_(False)
        layers = decoder_layers(lm)
        chosen = list(range(0, len(layers), cfg.cross_every))
        with torch.random.fork_rng(devices=[]):  # the seed decides the bridge without touching global state
            torch.manual_seed(cfg.seed)
            # Registered first, so that its parameters are named bridge.* wherever the LM also reaches them.
            self.bridge = Bridge(video.pos_space.shape[1], lm.config.hidden_size, len(chosen), cfg)
        self.video = video.eval()
        self.lm = lm.eval()
        self.slot = MediaSlot()
        for block, i in zip(self.bridge.xattn, chosen):
            layers[i] = GatedLayer(layers[i], block, self.slot)
        names = inspect.signature(lm.forward).parameters
        self._cache_key = "cache" if "cache" in names else "past_key_values"

    def train(self, mode: bool = True) -> Captioner:
        super().train(mode)
        self.video.eval()
        self.lm.eval()
        return self

    def media(self, video: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised clips ``[B, 3, T, H, W]`` (and kept patch indices ``[B, N_keep]`` or None) → latents
        ``[B, L, D]``. The encoder runs without gradients: nothing below the resampler learns."""
        with torch.no_grad():
            x, _ = self.video.encode(video, keep=keep)
            tokens = self.video.ln_post(x.flatten(1, 2) if x.dim() == 4 else x).float()
        return self.bridge.resampler(tokens)

    def lm_forward(self, media: torch.Tensor | None, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   cache: Any = None, use_cache: bool = False, logits_to_keep: int = 0) -> tuple[torch.Tensor, Any]:
        """The LM over ``input_ids`` ``[B, T]`` attending to ``media`` ``[B, L, D]`` (None: the LM alone) →
        (logits ``[B, T or logits_to_keep, V]`` in float32, the KV cache when ``use_cache``)."""
        self.slot.media = media
        try:
            out = self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache,
                          logits_to_keep=logits_to_keep, **{self._cache_key: cache})
        finally:
            self.slot.media = None
        new_cache = getattr(out, "cache", None) if use_cache else None
        if use_cache and new_cache is None:
            new_cache = out.past_key_values
        return out.logits.float(), new_cache


    def forward(self, video: torch.Tensor, keep: torch.Tensor | None, input_ids: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
        """The training loss of clips ``[B, 3, T, H, W]`` (``keep``: kept patch indices or None) and their
        captions' tokens ``[B, S]`` (``labels``: the same, -100 where not scored) → scalar."""
        logits, _ = self.lm_forward(self.media(video, keep), input_ids)
        return caption_loss(logits, labels)


def caption_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of the caption tokens (``logits`` ``[B, S, V]`` at position t predict
    ``labels[:, t + 1]``; -100 marks the start, prompt and padding, never scored), averaged over each
    caption's tokens, then over captions: every caption weighs the same, so that the mean over the
    processes of a DDP job is the loss of their global batch."""
    target = labels[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), target.clamp(min=0), reduction="none")  # [B, S-1]
    scored = (target != -100).to(nll.dtype)
    return ((nll * scored).sum(1) / scored.sum(1).clamp(min=1)).mean()
