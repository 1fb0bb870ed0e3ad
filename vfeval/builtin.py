"""The core's own plugin, registered through the ``vfeval`` entry-point group like any other."""

from __future__ import annotations

from vfeval import hookimpl
from vfeval.specs import AggregatorSpec

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
