"""Options of the ``videoprism-distill`` recipe: stage 2 of VideoPrism (Zhao et al. 2024), masked video
modelling with global-local distillation from the frozen stage-1 encoder.

Light on purpose: the plugin registers this schema without importing a framework. The sections that the
contrastive recipe also has (``model``, ``data``, ``optim``) are its own dataclasses
(``vfeval_videofirst.train_config``), so an option means the same in both recipes; ``model.mask`` and
``model.mask_ratio`` are the student's training masks, as they are the contrastive recipe's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vfeval.errors import UsageError
from vfeval_videofirst.config import VideoFirstConfig, architecture
from vfeval_videofirst.config import validate as validate_model
from vfeval_videofirst.train_config import (
    DataConfig,
    OptimConfig,
    RunOptions,
    bad_value,
    validate_backend,
    validate_optim,
    validate_run,
)

NAME = "videoprism-distill"


@dataclass
class DecoderConfig:
    depth: int = 2
    """Transformer blocks of the shallow decoder (the encoder's width, heads and MLP size). It is dropped
    after training: the output checkpoint holds the encoder alone."""


@dataclass
class DistillLossConfig:
    local_weight: float = 1.0
    """Weight of the token-wise term: the decoder's predictions against the teacher's tokens at the masked
    positions."""
    global_weight: float = 1.0
    """Weight of the global term: the student's pooled embedding (of the masked clip) against the teacher's
    (of the whole clip). It keeps the embedding in stage 1's joint space, which is what lets stage 1's
    text tower still read the stage-2 encoder."""


@dataclass
class DistillStageConfig:
    init_from: str = ""
    """The stage-1 checkpoint (``videofirst-contrastive`` with ``model.attention: factorised``): it is the
    teacher, frozen, and the student's starting point; its text tower and temperature are carried into
    the output unchanged."""
    trainable_layers: int = -1
    """Train only the student's last K blocks (with its final norm and projection); -1 trains all."""


@dataclass
class DistillConfig(RunOptions):
    """``seed`` also draws the shuffles and the decoder's initial weights."""

    trainer: str = NAME
    name: str = "videoprism_stage2"
    model: VideoFirstConfig = field(default_factory=VideoFirstConfig)
    data: DataConfig = field(default_factory=DataConfig)
    """Only the videos of the captions file are read: stage 2 trains on video-only clips."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: DistillLossConfig = field(default_factory=DistillLossConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    stage: DistillStageConfig = field(default_factory=DistillStageConfig)


def train(cfg: DistillConfig) -> str:
    """The ``videoprism-distill`` TrainerSpec's factory: the recipe in the backend ``model.backend`` names
    (``torch``, the default, or ``jax``), whose trainer alone is imported. Returns ``final.safetensors``."""
    validate(cfg)
    if cfg.model.backend == "jax":
        from vfeval_videofirst.distill.jax_train import train as run
    else:
        from vfeval_videofirst.distill.torch_train import train as run
    return run(cfg)


def validate(cfg: DistillConfig, need_init: bool = True) -> None:
    """Refuse option values that cannot work, each with a one-line message naming the key. ``need_init``
    False (benchmarks, which time a step whatever the weights) lets the teacher be the config's own
    initial weights instead of a stage-1 checkpoint."""
    from vfeval.video.sampling import validate as validate_sampling

    validate_model(cfg.model)
    validate_sampling(cfg.data.sampling)

    validate_backend(cfg.model)
    bad = bad_value
    if cfg.model.checkpoint:
        raise bad("model.checkpoint", cfg.model.checkpoint, "the stage-1 checkpoint goes in stage.init_from")
    if cfg.model.mask == "none" or not cfg.model.mask_ratio > 0:
        raise bad(
            "model.mask_ratio", cfg.model.mask_ratio,
            "masked video modelling needs masked input: set model.mask (tube for factorised attention) and a ratio > 0",
        )
    if cfg.data.sampling.mode != "uniform":
        raise bad(
            "data.sampling.mode", cfg.data.sampling.mode,
            "the decoder's position table is laid out for one clip length; use uniform",
        )
    if cfg.data.sampling.segments is not None:
        raise bad("data.sampling.segments", cfg.data.sampling.segments, "a training clip is one window; use null")
    if need_init and not cfg.stage.init_from:
        raise UsageError(
            "config: 'stage.init_from' is empty; stage 2 distils a stage-1 checkpoint (train "
            "configs/train/videoprism_stage1_synthetic.yaml first and name its final.safetensors)"
        )
    if cfg.stage.init_from and not cfg.stage.init_from.endswith(".safetensors"):
        raise bad("stage.init_from", cfg.stage.init_from, "it must be a .safetensors checkpoint")
    depth = architecture(cfg.model)["depth"]
    if not -1 <= cfg.stage.trainable_layers <= depth:
        raise bad("stage.trainable_layers", cfg.stage.trainable_layers, f"use -1 (all) or 0..{depth}")
    if cfg.decoder.depth < 1:
        raise bad("decoder.depth", cfg.decoder.depth, "the decoder needs at least one block")
    for key in ("local_weight", "global_weight"):
        if getattr(cfg.loss, key) < 0:
            raise bad(f"loss.{key}", getattr(cfg.loss, key), "it cannot be negative")
    if not cfg.loss.local_weight + cfg.loss.global_weight > 0:
        raise UsageError("config: 'loss.local_weight' and 'loss.global_weight' are both 0; nothing would be learnt")
    validate_optim(cfg.optim)
    if cfg.data.num_workers < 0:
        raise bad("data.num_workers", cfg.data.num_workers, "it cannot be negative")
    validate_run(cfg)


def summary(cfg: DistillConfig, steps: int) -> dict:
    """The recipe's ``training`` summary for its final checkpoint (``checkpoint.training_summary``): stage 1's
    stages, read from ``stage.init_from``, then this one."""
    from vfeval_videofirst.checkpoint import masking_label, training_summary

    stage = {
        "trainer": NAME,
        "objective": "masked distillation: token-wise (shuffled decoder) + global",
        "masking": masking_label(cfg.model.mask, cfg.model.mask_ratio),
        "steps": int(steps),
        "frames": int(cfg.data.sampling.num_frames),
        "batch_size": int(cfg.optim.batch_size * cfg.optim.grad_accum),
        "attention": cfg.model.attention,
    }
    return training_summary(stage, cfg.stage.init_from)
