"""Options of the masked video-first encoder, its size variants, and its token grid.

Light on purpose: `vfeval ls` imports this module through the plugin, so nothing here imports torch.
This module owns the tubelet size, the patch grid and every token count derived from them
(`token_grid`, `num_patch_tokens`); the model and the masks ask it instead of recomputing.
"""

from __future__ import annotations

from dataclasses import dataclass

from vfeval.config import EncoderConfig
from vfeval.errors import UsageError

# Transformer sizes from "An Image is Worth 16x16 Words" (Dosovitskiy et al., 2021, table 1) and the
# S size of "How to train your ViT?" (Steiner et al., 2021); "tiny" is ours, for tests and laptops.
VARIANTS: dict[str, dict[str, int]] = {
    "tiny": dict(width=64, depth=2, heads=2, mlp=256),
    "S": dict(width=384, depth=12, heads=6, mlp=1536),
    "B": dict(width=768, depth=12, heads=12, mlp=3072),
    "L": dict(width=1024, depth=24, heads=16, mlp=4096),
}

# The small trainable text tower used when no CLIP text tower is wanted (``text="bytes"`` or ``"words"``):
# UTF-8 bytes or hashed words as tokens, so it needs no vocabulary file and can be trained from scratch offline.
BYTE_TEXT_DEPTH = 2
BYTE_TEXT_LENGTH = 64

CHOICES = {
    "variant": tuple(VARIANTS),
    "attention": ("joint", "factorised"),
    "mask": ("none", "random", "tube", "block"),
    "init": ("none", "clip"),
    "inflation": ("central", "average"),
    "text": ("clip", "bytes", "words", "none"),
    "pool": ("cls", "mean"),
    "device": ("auto", "cpu", "cuda"),
}


@dataclass
class VideoFirstConfig(EncoderConfig):
    """A ViViT-style video transformer, optionally inflated from CLIP, trained with masked input.

    Frame counts belong to the run's sampling config. ``num_frames`` only sets how many temporal
    position embeddings the model has; a clip with another number of frames gets them resampled by
    linear interpolation, so a model trained on 16 frames can be evaluated on 8 or 64.
    """

    name: str = "videofirst"
    variant: str = "B"
    """Transformer size, a key of ``VARIANTS``; with ``init=clip`` it must match the CLIP vision tower."""
    tubelet: tuple[int, int, int] = (2, 16, 16)
    """(t, h, w) of one token; h and w must equal CLIP's patch size when inflating."""
    num_frames: int = 16
    """Frames the temporal position embedding is laid out for (not how many frames are sampled)."""
    image_size: int = 224
    """Frames are resized to image_size x image_size before the tubelet embedding."""
    attention: str = "joint"
    """joint: every token attends to every token; factorised: spatial per frame, then gated temporal."""
    mask: str = "none"
    """Which input tokens are dropped: none, random (MAE), tube (same positions in every slice), block (VIMPAC)."""
    mask_ratio: float = 0.0
    """Fraction of patch tokens dropped while training (and at evaluation only if ``mask_at_eval``)."""
    mask_at_eval: bool = False
    init: str = "clip"
    """clip: inflate an image-text CLIP model; none: random weights drawn from ``seed``."""
    clip_model: str = "openai/clip-vit-base-patch16"
    """HF hub name or local directory of a CLIPModel (weights, config and tokenizer)."""
    inflation: str = "central"
    """How the 2D patch kernel becomes a tubelet kernel: central slice (zeros elsewhere) or average over t."""
    checkpoint: str = ""
    """A .safetensors file written by ``save_checkpoint``; its weights replace the initial ones."""
    embed_dim: int = 512
    """Dimension of the joint video-text space (CLIP's projection_dim when inflating)."""
    text: str = "clip"
    """clip: CLIP's text tower and tokenizer; bytes / words: a small tower over UTF-8 bytes / hashed words
    (trained from scratch, no vocabulary file); none: no text."""
    text_length: int = BYTE_TEXT_LENGTH
    """Tokens the small tower reads (``text=bytes`` or ``words``), start token included; longer texts are cut."""
    pool: str = "cls"
    """cls: mean of the per-slice class tokens (reproduces CLIP on a static video); mean: mean of patch tokens."""
    seed: int = 0
    """Seeds the random initialisation and the evaluation-time masks."""
    device: str = "auto"


def architecture(cfg: VideoFirstConfig) -> dict[str, int]:
    """width, depth, heads and mlp of the transformer."""
    if cfg.variant not in VARIANTS:
        raise UsageError(f"videofirst: unknown variant {cfg.variant!r}; use one of {', '.join(VARIANTS)}")
    return dict(VARIANTS[cfg.variant])


def token_grid(cfg: VideoFirstConfig, num_frames: int | None = None) -> tuple[int, int, int]:
    """(nt, nh, nw): tubelets along time, height and width for ``num_frames`` (default ``cfg.num_frames``).

    The one place token counts are derived. A frame count that is not a multiple of the tubelet's t is
    rounded up: the encoder pads such clips by repeating their last frame.
    """
    t, h, w = cfg.tubelet
    frames = cfg.num_frames if num_frames is None else num_frames
    return -(-frames // t), cfg.image_size // h, cfg.image_size // w


def num_patch_tokens(cfg: VideoFirstConfig, num_frames: int | None = None) -> int:
    """Patch tokens of one clip before masking (class tokens not included)."""
    nt, nh, nw = token_grid(cfg, num_frames)
    return nt * nh * nw


ARCHITECTURE_KEYS = (
    "variant", "tubelet", "num_frames", "image_size", "attention", "embed_dim", "text", "text_length", "pool",
)
"""Options that shape the weights (or how they are read out): a checkpoint only fits a config that agrees on them."""


def validate(cfg: VideoFirstConfig) -> None:
    """Refuse option values that cannot work, each with a one-line message naming the key."""
    for key, allowed in CHOICES.items():
        value = getattr(cfg, key)
        if value not in allowed:
            raise UsageError(f"videofirst: bad value for {key!r}: {value!r}; use one of {', '.join(allowed)}")
    arch = architecture(cfg)
    if arch["width"] % arch["heads"]:
        raise UsageError(f"videofirst: width {arch['width']} is not divisible by heads {arch['heads']}")
    if len(cfg.tubelet) != 3 or min(cfg.tubelet) < 1:
        raise UsageError(
            f"videofirst: tubelet must be three positive sizes (t, h, w), got {tuple(cfg.tubelet)}"
        )
    _, h, w = cfg.tubelet
    if cfg.image_size % h or cfg.image_size % w:
        raise UsageError(
            f"videofirst: image_size {cfg.image_size} is not a multiple of the tubelet's {h}x{w}"
        )
    if cfg.text in ("bytes", "words") and cfg.text_length < 2:
        raise UsageError(f"videofirst: text_length must be at least 2, got {cfg.text_length}")
    if cfg.num_frames < 1:
        raise UsageError(f"videofirst: num_frames must be positive, got {cfg.num_frames}")
    if not 0.0 <= cfg.mask_ratio < 1.0:
        raise UsageError(f"videofirst: mask_ratio must be in [0, 1), got {cfg.mask_ratio}")
    if cfg.attention == "factorised" and cfg.mask not in ("none", "tube"):
        raise UsageError(
            f"videofirst: factorised attention needs the same tokens in every frame; use mask=tube or none, not {cfg.mask!r}"
        )
    if cfg.checkpoint and not cfg.checkpoint.endswith(".safetensors"):
        raise UsageError(f"videofirst: checkpoint must be a .safetensors file, got {cfg.checkpoint!r}")
