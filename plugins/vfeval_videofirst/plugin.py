"""Registers the masked video-first encoder, its trainer and the ``profile`` command with vfeval.

Imports nothing heavy: `vfeval ls` and `vfeval --help` load this module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vfeval import hookimpl
from vfeval.specs import EncoderSpec, TrainerSpec
from vfeval_videofirst.config import VideoFirstConfig
from vfeval_videofirst.distill.config import DistillConfig
from vfeval_videofirst.train_config import TrainConfig


@hookimpl
def register_encoders(register: Callable[[EncoderSpec], None]) -> None:
    register(
        EncoderSpec(
            name="videofirst",
            factory="vfeval_videofirst.factory:make_encoder",
            config=VideoFirstConfig,
            backends=("torch", "jax"),
            capabilities=("embed_video", "embed_text"),
            family="video-first",
            description="Video-first dual encoder (LongViViT recipe): joint space-time attention over tubelets, "
            "masked input while training, inflated from CLIP",
        )
    )


@hookimpl
def register_trainers(register: Callable[[TrainerSpec], None]) -> None:
    register(
        TrainerSpec(
            name="videofirst-contrastive",
            factory="vfeval_videofirst.train_config:train",
            config=TrainConfig,
            description="Contrastive video-text training of the videofirst encoder (InfoNCE or sigmoid), "
            "in stages, with masking, freezing and resume; torch (torchrun DDP) or JAX (sharded over devices)",
        )
    )
    register(
        TrainerSpec(
            name="videoprism-distill",
            factory="vfeval_videofirst.distill.config:train",
            config=DistillConfig,
            description="Stage 2 of VideoPrism: masked video modelling distilling the frozen stage-1 encoder "
            "(token-wise at masked positions through a shuffled decoder, and global); torch or JAX",
        )
    )


@hookimpl
def register_commands(app: Any) -> None:
    from vfeval_videofirst.commands import add_profile_command

    add_profile_command(app)
