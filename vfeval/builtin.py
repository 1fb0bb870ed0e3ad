"""The core's own plugin, registered through the ``vfeval`` entry-point group like any other."""

from __future__ import annotations

import importlib.util

from vfeval import hookimpl
from vfeval.specs import AggregatorSpec, DecoderSpec

EMBEDDING_KINDS = ("video_embedding", "text_embedding", "choice_scores")


@hookimpl
def register_aggregators(register):
    from vfeval.aggregators import EmbeddingAggregatorConfig

    register(AggregatorSpec(
        name="identity", factory="vfeval.aggregators:make_identity", config=EmbeddingAggregatorConfig,
        kinds=EMBEDDING_KINDS, description="One clip is the whole video (video-first encoders).",
    ))
    register(AggregatorSpec(
        name="mean", factory="vfeval.aggregators:make_mean", config=EmbeddingAggregatorConfig,
        kinds=EMBEDDING_KINDS, description="Mean of the (normalised) segment embeddings: late fusion.",
    ))


@hookimpl
def register_decoders(register):
    register(DecoderSpec(
        name="pyav", factory="vfeval.video.backends:PyAVBackend",
        description="FFmpeg through PyAV, seeking to the keyframe before each wanted time (the default).",
    ))
    register(DecoderSpec(
        name="pyav-decode-all", factory="vfeval.video.backends:PyAVDecodeAllBackend",
        description="FFmpeg through PyAV, decoding every frame: slow, simple, the reference.",
    ))
    # Only where it is installed; finding the package imports nothing (torchcodec imports torch).
    if importlib.util.find_spec("torchcodec") is not None:
        register(DecoderSpec(
            name="torchcodec", factory="vfeval.video.torchcodec:TorchCodecBackend",
            description="FFmpeg through TorchCodec (the torchcodec extra): the frame played at each time.",
        ))
