"""Options of the ``videofirst-captioner``: a frozen video-first encoder, a Perceiver resampler and gated
cross-attention inside a frozen causal LM (Flamingo's bridge), and how it decodes.

Light on purpose: `vfeval ls` imports this module through the plugin, so nothing here imports torch.
The same dataclass is the ``model`` section of the trainer's config (``train_config.py``): the options
that train a captioner are the options that evaluate it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vfeval_videofirst.config import VideoFirstConfig
from vfeval_videofirst.config import validate as validate_video

from vfeval.config import EncoderConfig
from vfeval.errors import UsageError

DECODINGS = ("greedy", "beam")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class CaptionerConfig(EncoderConfig):
    """Flamingo's bridge (Alayrac et al., 2022) between a frozen video encoder and a frozen LM, as LongViViT
    (Papalampidi et al., 2024) uses it for captioning and summaries. Only the bridge has weights of its
    own (``checkpoint``); the encoder and the LM are read from where their options say."""

    name: str = "videofirst-captioner"
    video: VideoFirstConfig = field(default_factory=lambda: VideoFirstConfig(device="cpu"))
    """The frozen video encoder: the ``videofirst`` encoder's own options (its ``checkpoint`` holds the weights).
    Its ``device`` is ignored: the captioner's ``device`` places everything."""
    lm: str = ""
    """The frozen causal language model: a local directory saved by transformers, or a hub name."""
    checkpoint: str = ""
    """A ``.safetensors`` of the trained bridge (``runs/train-NAME/final.safetensors``); required to evaluate."""
    num_latents: int = 64
    """Latent queries of the Perceiver resampler: the fixed number of visual tokens the LM attends to."""
    resampler_depth: int = 2
    """Resampler layers (Flamingo: 6)."""
    heads: int = 4
    """Attention heads of the resampler and of each cross-attention block."""
    ff_mult: int = 4
    """Hidden width of the feed-forward layers, as a multiple of their width."""
    cross_every: int = 1
    """A gated cross-attention block before every k-th LM layer, the first included (Flamingo: 1 to 7)."""
    prompt: str = ""
    """Text the LM reads after its start token and before the caption, in training and in decoding alike."""
    decoding: str = "greedy"
    """``greedy`` or ``beam``."""
    beams: int = 3
    """Beams of ``beam`` decoding."""
    length_penalty: float = 1.0
    """``beam``: a finished beam scores its log-probability divided by its length to this power."""
    max_new_tokens: int = 48
    kv_cache: bool = True
    """Keep the LM's keys and values between decoding steps (the same captions, faster)."""
    batch_size: int = 16
    """Clips decoded together."""
    seed: int = 0
    """Seeds the bridge's initial weights (training)."""
    device: str = "auto"
    dtype: str = "auto"
    """The frozen LM's dtype: ``auto`` is bfloat16 on a GPU, float32 on the CPU; the bridge computes in float32."""


def validate(cfg: CaptionerConfig, key: str = "pipeline.encoder") -> None:
    """Refuse option values that cannot work, each with a one-line message naming the key."""
    validate_video(cfg.video)
    for name in ("num_latents", "resampler_depth", "heads", "ff_mult", "cross_every", "beams", "max_new_tokens",
                 "batch_size"):
        if getattr(cfg, name) < 1:
            raise UsageError(f"config: bad value for '{key}.{name}': {getattr(cfg, name)}; it must be at least 1")
    if cfg.decoding not in DECODINGS:
        raise UsageError(f"config: bad value for '{key}.decoding': {cfg.decoding!r}; use {', '.join(DECODINGS)}")
    if cfg.device not in DEVICES:
        raise UsageError(f"config: bad value for '{key}.device': {cfg.device!r}; use {', '.join(DEVICES)}")
    if not cfg.lm:
        raise UsageError(f"config: missing value for '{key}.lm'; give a causal LM's directory or hub name")
    if cfg.checkpoint and not cfg.checkpoint.endswith(".safetensors"):
        raise UsageError(f"config: bad value for '{key}.checkpoint': {cfg.checkpoint!r}; it must be a .safetensors file")


ARCHITECTURE_KEYS = ("num_latents", "resampler_depth", "heads", "ff_mult", "cross_every", "prompt")
"""Options that shape the bridge's weights or what it was trained to read: a checkpoint only fits a config that
agrees on them."""
