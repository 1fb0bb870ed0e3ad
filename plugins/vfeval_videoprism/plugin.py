"""Registers the ``videoprism`` encoder and the ``convert`` command with vfeval.

Imports nothing heavy: `vfeval ls` and `vfeval --help` load this module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vfeval import hookimpl
from vfeval.specs import EncoderSpec
from vfeval_videoprism.config import VideoPrismConfig


@hookimpl
def register_encoders(register: Callable[[EncoderSpec], None]) -> None:
    register(
        EncoderSpec(
            name="videoprism",
            factory="vfeval_videoprism.factory:make_encoder",
            config=VideoPrismConfig,
            backends=("torch", "jax"),
            capabilities=("embed_video", "embed_text"),
            family="video-first",
            description="VideoPrism's official checkpoints (factorised video encoder; LvT models also embed "
            "text): torch through transformers, jax through our Flax model reading the official .npz",
        )
    )


@hookimpl
def register_commands(app: Any) -> None:
    from vfeval_videoprism.commands import add_convert_command

    add_convert_command(app)
