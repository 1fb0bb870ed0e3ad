"""Registers the masked video-first encoder with vfeval. Imports nothing heavy: `vfeval ls` loads this module."""

from __future__ import annotations

from collections.abc import Callable

from vfeval import hookimpl
from vfeval.specs import EncoderSpec
from vfeval_videofirst.config import VideoFirstConfig


@hookimpl
def register_encoders(register: Callable[[EncoderSpec], None]) -> None:
    register(
        EncoderSpec(
            name="videofirst",
            factory="vfeval_videofirst.torch.encoder:make_encoder",
            config=VideoFirstConfig,
            backends=("torch",),
            capabilities=("embed_video", "embed_text"),
            description="Video-first dual encoder (LongViViT recipe): joint space-time attention over tubelets, "
            "masked input while training, inflated from CLIP",
        )
    )
