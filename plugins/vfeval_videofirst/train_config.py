"""Options of the ``videofirst-contrastive`` training recipe (``vfeval train configs/train/*.yaml``).

Light on purpose: the plugin registers this schema without importing torch. The YAML's ``trainer`` key
names the recipe; every other key is checked against these dataclasses, so a misspelt key is an error.
The model section is the encoder's own ``VideoFirstConfig``: the options that train a model are the
options that evaluate it (see ``configs/videofirst_synthetic.yaml``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from vfeval.config import FRAMEWORKS, SamplingConfig
from vfeval.errors import UsageError
from vfeval_videofirst.config import VideoFirstConfig, architecture
from vfeval_videofirst.config import validate as validate_model

LOSSES = ("infonce", "sigmoid")
BACKENDS = ("torch", "jax")
"""Frameworks the recipe runs on (``model.backend``; empty means torch): ``torch/train.py``, ``jax/train.py``."""


@dataclass
class DataConfig:
    captions: str = MISSING
    """A ``.jsonl`` (``{"video", "caption", "start", "end"}`` per line) or ``.csv`` (columns video, caption and
    optionally start, end) of video-caption pairs; video paths are relative to the file's folder."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """Which frames of each video (or of its ``[start, end)`` window) a training clip holds."""
    num_workers: int = 0
    """DataLoader processes decoding videos (0: in the training process)."""
    shift_text_positions: bool = False
    """Start each training text's positions at a random offset (small text towers, ``model.text=bytes|words``):
    so that a text means the same after a prefix of another length, e.g. a question's (see
    ``torch/model.py:shifted_positions``)."""
    word_dropout: float = 0.0
    """Drop each word of a training caption with this probability (keeping one per event and the temporal
    connectives): captions of many lengths, so order is learnt from the connectives, not byte offsets."""
    cache: bool = False
    """Keep decoded clips in memory after the first epoch (small data sets: T x H x W x 3 bytes per pair)."""


@dataclass
class OptimConfig:
    lr: float = 1e-4
    """Peak learning rate, reached after ``warmup_steps`` and decayed by a cosine to ``min_lr``."""
    min_lr: float = 0.0
    weight_decay: float = 0.05
    """AdamW's decoupled weight decay, on matrices only (not on biases, norms, embeddings tables or the scale)."""
    beta2: float = 0.98
    warmup_steps: int = 0
    steps: int = 0
    """Optimizer steps in all; 0 means ``epochs`` passes over the data."""
    epochs: int = 0
    batch_size: int = 8
    """Clips per process in one forward pass; the contrastive batch is ``batch_size x processes``."""
    grad_accum: int = 1
    """Forward passes whose gradients are summed before each optimizer step (negatives stay within one pass)."""
    clip_grad: float = 1.0
    """Largest global gradient norm; 0 turns clipping off."""
    bf16: bool = True
    """bfloat16 autocast on CUDA devices that support it; fp32 elsewhere."""


@dataclass
class LossConfig:
    kind: str = "infonce"
    """infonce: symmetric softmax cross-entropy over the batch (CLIP); sigmoid: pairwise logistic (SigLIP)."""
    temperature: float | None = None
    """Initial temperature; None keeps the model's (CLIP's learned one, or 0.07) for infonce and uses 0.1 for sigmoid."""
    learn_temperature: bool = True
    bias: float = -10.0
    """Initial logit bias of the sigmoid loss (learned with it)."""
    captions: str = "one"
    """Which captions of a clip a batch holds: ``one`` drawn per clip per visit (CLIP's way), or ``all`` of
    them (each a positive of every clip in the batch that has it; small text towers only: the batch then
    embeds every caption of every clip)."""
    order_negatives: bool = False
    """Add, for each caption that lists events with temporal connectives ("..., then ..."), the same caption
    with its events in another order as a negative for every video: teaches order, which a batch of
    ordinary negatives never asks for (see ``torch/losses.py``)."""


@dataclass
class StageConfig:
    init_from: str = ""
    """A ``.safetensors`` checkpoint of an earlier stage to start from (its temporal position table is
    resampled if this stage lays out another number of frames)."""
    trainable_layers: int = -1
    """Train only the last K blocks of the video transformer (and its final norm and projection); -1 trains all."""
    train_text: bool = True
    """Whether the text tower learns in this stage."""
    time_embedding_std: float = 0.0
    """From scratch only (``model.init=none``, no ``init_from``): draw the temporal position table from
    N(0, std^2), seeded by ``model.seed``, instead of zeros. The zero table (what inflation needs) leaves
    every slice alike, and a small random one is drowned by the tokens' scale: a from-scratch model then
    learns when things happen very slowly. 0 keeps the model's zeros."""


@dataclass
class RunOptions:
    """A training run's folder, seed and checkpointing: the options every trainer of the project shares
    (contrastive, distillation, VIMPAC, the VQ-VAE, the captioner)."""

    seed: int = 0
    """Seeds the order of the data and the training masks (``model.seed`` seeds the initial weights)."""
    output_dir: str = "runs/train-${name}"
    checkpoint_every: int = 0
    """Optimizer steps between resumable checkpoints; 0 writes only the final one."""
    keep_checkpoints: int = 2
    """Resumable checkpoints kept on disk, newest first; 0 keeps them all."""
    resume: bool = False
    """Continue from the newest checkpoint in ``output_dir`` (the run ends where an uninterrupted one would)."""
    log_every: int = 10
    """Optimizer steps between lines of ``metrics.jsonl``."""

    def out_path(self) -> Path:
        return Path(self.output_dir)


@dataclass
class TrainConfig(RunOptions):
    trainer: str = "videofirst-contrastive"
    name: str = "videofirst"
    model: VideoFirstConfig = field(default_factory=VideoFirstConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    stage: StageConfig = field(default_factory=StageConfig)


def train(cfg: TrainConfig) -> str:
    """The ``videofirst-contrastive`` TrainerSpec's factory: the recipe in the backend ``model.backend``
    names (``torch``, the default, or ``jax``), whose trainer alone is imported. Returns ``final.safetensors``."""
    validate(cfg)
    if cfg.model.backend == "jax":
        from vfeval_videofirst.jax.train import train as run
    else:
        from vfeval_videofirst.torch.train import train as run
    return run(cfg)


def bad_value(key: str, value: object, why: str) -> UsageError:
    """The one-line error of a config value that cannot work, naming its key."""
    return UsageError(f"config: bad value for {key!r}: {value!r}; {why}")


def validate_backend(model: VideoFirstConfig) -> None:
    """``model.backend`` names a framework the trainers run on, and it is installed (every trainer's check)."""
    backend = model.backend or "torch"
    if backend not in BACKENDS:
        raise bad_value("model.backend", backend, f"the trainer runs on {', '.join(BACKENDS)}")
    module, install = FRAMEWORKS[backend]
    if importlib.util.find_spec(module) is None:
        raise UsageError(f"config: 'model.backend' is {backend!r}, but {module} is not installed: {install}")


def validate_optim(o: OptimConfig) -> None:
    """The ``optim`` section's checks, shared by every trainer that takes an ``OptimConfig``."""
    if (o.steps > 0) == (o.epochs > 0):
        raise UsageError("config: set exactly one of 'optim.steps' and 'optim.epochs' to a positive number")
    for key in ("batch_size", "grad_accum"):
        if getattr(o, key) < 1:
            raise bad_value(f"optim.{key}", getattr(o, key), "it must be at least 1")
    if o.steps < 0 or o.epochs < 0 or o.warmup_steps < 0:
        raise UsageError("config: 'optim.steps', 'optim.epochs' and 'optim.warmup_steps' cannot be negative")
    if not o.lr > 0 or o.min_lr < 0 or o.min_lr > o.lr:
        raise bad_value("optim.lr", o.lr, "it must be positive and at least optim.min_lr")
    if o.clip_grad < 0 or o.weight_decay < 0:
        raise UsageError("config: 'optim.clip_grad' and 'optim.weight_decay' cannot be negative")


def validate_run(cfg: Any) -> None:
    """The run folder's options (``name``, ``checkpoint_every``, ``keep_checkpoints``, ``log_every``) of any
    trainer config that has them."""
    for key in ("checkpoint_every", "keep_checkpoints"):
        if getattr(cfg, key) < 0:
            raise bad_value(key, getattr(cfg, key), "it cannot be negative")
    if cfg.log_every < 1:
        raise bad_value("log_every", cfg.log_every, "it must be at least 1")
    if not cfg.name or "/" in cfg.name:
        raise bad_value("name", cfg.name, "use a plain folder name")


def validate(cfg: TrainConfig) -> None:
    """Refuse option values that cannot work, each with a one-line message naming the key."""
    from vfeval.video.sampling import validate as validate_sampling

    validate_model(cfg.model)
    validate_sampling(cfg.data.sampling)

    bad = bad_value
    validate_backend(cfg.model)

    if cfg.model.checkpoint:
        raise bad("model.checkpoint", cfg.model.checkpoint, "to start from a checkpoint set stage.init_from")
    if cfg.data.sampling.segments is not None:
        raise bad("data.sampling.segments", cfg.data.sampling.segments, "a training clip is one window; use null")
    if cfg.model.text == "none":
        raise bad("model.text", "none", "contrastive training needs a text tower (clip or bytes)")
    if cfg.loss.kind not in LOSSES:
        raise bad("loss.kind", cfg.loss.kind, f"use one of {', '.join(LOSSES)}")
    if cfg.loss.captions not in ("one", "all"):
        raise bad("loss.captions", cfg.loss.captions, "use one or all")
    if cfg.loss.temperature is not None and not cfg.loss.temperature > 0:
        raise bad("loss.temperature", cfg.loss.temperature, "it must be positive")
    validate_optim(cfg.optim)
    if cfg.data.shift_text_positions and cfg.model.text not in ("bytes", "words"):
        raise bad("data.shift_text_positions", True, "only the small text towers (model.text=bytes|words) take it")
    if not 0 <= cfg.data.word_dropout < 1:
        raise bad("data.word_dropout", cfg.data.word_dropout, "use a probability in [0, 1)")
    if cfg.data.num_workers < 0:
        raise bad("data.num_workers", cfg.data.num_workers, "it cannot be negative")
    depth = architecture(cfg.model)["depth"]
    if not -1 <= cfg.stage.trainable_layers <= depth:
        raise bad("stage.trainable_layers", cfg.stage.trainable_layers, f"use -1 (all) or 0..{depth}")
    if cfg.stage.time_embedding_std < 0 or (
        cfg.stage.time_embedding_std and (cfg.model.init != "none" or cfg.stage.init_from)
    ):
        raise bad(
            "stage.time_embedding_std",
            cfg.stage.time_embedding_std,
            "only a model trained from scratch (model.init=none, no stage.init_from) gets a drawn table",
        )
    if cfg.stage.init_from and not cfg.stage.init_from.endswith(".safetensors"):
        raise bad("stage.init_from", cfg.stage.init_from, "it must be a .safetensors checkpoint")
    validate_run(cfg)
