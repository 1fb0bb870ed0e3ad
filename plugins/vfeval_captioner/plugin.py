"""Registers the video-to-text captioner: its encoder, the ``caption`` aggregator, its trainer and ``vfeval tiny-lm``.

Imports nothing heavy: `vfeval ls` and `vfeval --help` load this module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vfeval import hookimpl
from vfeval.specs import AggregatorSpec, EncoderSpec, TrainerSpec


@hookimpl
def register_encoders(register: Callable[[EncoderSpec], None]) -> None:
    from vfeval_captioner.config import CaptionerConfig

    register(EncoderSpec(
        name="videofirst-captioner", factory="vfeval_captioner.encoder:make_encoder", config=CaptionerConfig,
        backends=("torch",), capabilities=("describe",), family="video-first",
        description="Video-to-text (LongViViT, Flamingo-style): the frozen videofirst encoder's tokens, a "
        "Perceiver resampler and tanh-gated cross-attention in a frozen HF causal LM; greedy or beam decoding",
    ))


@hookimpl
def register_aggregators(register: Callable[[AggregatorSpec], None]) -> None:
    from vfeval_captioner.aggregator import CaptionConfig

    register(AggregatorSpec(
        name="caption", factory="vfeval_captioner.aggregator:make_caption", config=CaptionConfig,
        kinds=("generate",),
        description="Answers generate requests with the encoder's own caption of the window (video-to-text "
        "encoders such as videofirst-captioner); several segments' captions are joined in order.",
    ))


@hookimpl
def register_trainers(register: Callable[[TrainerSpec], None]) -> None:
    from vfeval_captioner.train_config import CaptionerTrainConfig

    register(TrainerSpec(
        name="videofirst-captioner", factory="vfeval_captioner.train_config:train", config=CaptionerTrainConfig,
        description="Trains the captioner's resampler and gated cross-attention on a captions file, video "
        "encoder and LM frozen, input masked (30% in LongViViT); resumable, torchrun DDP",
    ))


@hookimpl
def register_commands(app: Any) -> None:
    from vfeval_captioner.commands import add_tiny_lm_command

    add_tiny_lm_command(app)
