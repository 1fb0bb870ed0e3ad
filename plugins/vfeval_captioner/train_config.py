"""Options of the ``videofirst-captioner`` training recipe (``vfeval train configs/train/captioner_*.yaml``).

Light on purpose: the plugin registers this schema without importing torch. The ``model`` section is the
encoder's own ``CaptionerConfig`` (what trains a captioner evaluates it); ``optim`` is the video-first
trainer's, with the same meaning. The run folder is the video-first trainers' (``vfeval_videofirst.run_files``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from omegaconf import MISSING
from vfeval_videofirst.masking import MASKS
from vfeval_videofirst.train_config import OptimConfig, RunOptions, bad_value, validate_optim, validate_run

from vfeval.config import SamplingConfig
from vfeval_captioner.config import CaptionerConfig
from vfeval_captioner.config import validate as validate_model


@dataclass
class CaptionerDataConfig:
    captions: str = MISSING
    """A captions file (``vfeval.captions``: JSONL or CSV of video, caption, start, end)."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """Which frames of each video (or of its window) a training clip holds."""
    caption_pattern: str = ""
    """A regular expression: only captions it matches (``re.search``) are trained on, and clips left with none
    are dropped. Empty keeps every caption."""
    max_tokens: int = 64
    """LM tokens of a caption (its end token included); longer captions are cut."""
    num_workers: int = 0
    """DataLoader processes decoding videos (0: in the training process)."""
    cache: bool = False
    """Keep decoded clips in memory after the first epoch (small data sets)."""


@dataclass
class MaskConfig:
    """Input masking of the frozen encoder while the bridge trains (LongViViT trains its captioner with 30%)."""

    kind: str = "random"
    """``none`` or a mask of ``vfeval_videofirst.masking``: ``random``, ``tube``, ``block``."""
    ratio: float = 0.3
    """Fraction of the video's patch tokens dropped before the encoder, drawn anew for every clip and step."""


@dataclass
class CaptionerTrainConfig(RunOptions):
    """``seed`` also draws the caption of each clip (``model.seed`` seeds the bridge)."""

    trainer: str = "videofirst-captioner"
    name: str = "captioner"
    model: CaptionerConfig = field(default_factory=CaptionerConfig)
    data: CaptionerDataConfig = field(default_factory=CaptionerDataConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


def validate(cfg: CaptionerTrainConfig) -> None:
    """Refuse option values that cannot work, each with a one-line message naming the key."""
    from vfeval.video.sampling import validate as validate_sampling

    validate_model(cfg.model, "model")
    validate_sampling(cfg.data.sampling)

    bad = bad_value
    if cfg.model.checkpoint:
        raise bad("model.checkpoint", cfg.model.checkpoint, "the trainer starts a fresh bridge; leave it empty")
    if cfg.model.video.mask_at_eval:
        raise bad("model.video.mask_at_eval", True, "the trainer masks the input itself (mask.kind, mask.ratio)")
    if cfg.data.sampling.segments is not None:
        raise bad("data.sampling.segments", cfg.data.sampling.segments, "a training clip is one window; use null")
    if cfg.mask.kind != "none" and cfg.mask.kind not in MASKS:
        raise bad("mask.kind", cfg.mask.kind, f"use none, {', '.join(MASKS)}")
    if not 0.0 <= cfg.mask.ratio < 1.0:
        raise bad("mask.ratio", cfg.mask.ratio, "use a fraction in [0, 1)")
    if cfg.model.video.attention == "factorised" and cfg.mask.kind not in ("none", "tube"):
        raise bad("mask.kind", cfg.mask.kind, "factorised attention needs mask.kind=tube or none")
    try:
        re.compile(cfg.data.caption_pattern)
    except re.error as exc:
        raise bad("data.caption_pattern", cfg.data.caption_pattern, f"not a regular expression ({exc})") from exc
    if cfg.data.max_tokens < 2:
        raise bad("data.max_tokens", cfg.data.max_tokens, "it must be at least 2")
    if cfg.data.num_workers < 0:
        raise bad("data.num_workers", cfg.data.num_workers, "it cannot be negative")
    validate_optim(cfg.optim)
    validate_run(cfg)


def train(cfg: CaptionerTrainConfig) -> str:
    """The ``videofirst-captioner`` TrainerSpec's factory (torch only); returns ``final.safetensors``."""
    validate(cfg)
    from vfeval_captioner.train import train as run

    return run(cfg)
