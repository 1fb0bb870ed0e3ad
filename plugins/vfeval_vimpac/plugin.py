"""Registers VIMPAC with vfeval: the ``vimpac`` encoder, the ``vimpac`` and ``vqvae`` trainers and
``vfeval convert dvae``.

Imports nothing heavy: `vfeval ls` and `vfeval --help` load this module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vfeval import hookimpl
from vfeval.specs import EncoderSpec, TrainerSpec
from vfeval_vimpac.config import VimpacConfig, VimpacTrainConfig, VqvaeTrainConfig


@hookimpl
def register_encoders(register: Callable[[EncoderSpec], None]) -> None:
    register(
        EncoderSpec(
            name="vimpac",
            factory="vfeval_vimpac.factory:make_encoder",
            config=VimpacConfig,
            backends=("torch", "jax"),
            capabilities=("embed_video",),
            family="video-first",
            description="VIMPAC (masked token prediction + contrastive clips): a transformer over a clip's "
            "discrete visual tokens; frozen [CLS] features for probes",
        )
    )


@hookimpl
def register_trainers(register: Callable[[TrainerSpec], None]) -> None:
    register(
        TrainerSpec(
            name="vimpac",
            factory="vfeval_vimpac.config:train",
            config=VimpacTrainConfig,
            description="VIMPAC pre-training: block-masked token prediction on VQ codes plus a contrastive "
            "loss between two clips of a video; torch (torchrun DDP) or JAX",
        )
    )
    register(
        TrainerSpec(
            name="vqvae",
            factory="vfeval_vimpac.config:train_vqvae",
            config=VqvaeTrainConfig,
            description="A small VQ-VAE (8x downsampling) whose codebook VIMPAC tokenizes videos with; torch",
        )
    )


@hookimpl(trylast=True)
def register_commands(app: Any) -> None:
    from vfeval_vimpac.commands import add_convert_command

    add_convert_command(app)
