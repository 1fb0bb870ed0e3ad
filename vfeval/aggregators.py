"""The aggregators every pipeline can use: ``identity`` (video-first: one clip is the whole video) and
``mean`` (late fusion: mean of segment embeddings)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vfeval.config import AggregatorConfig
from vfeval.errors import UsageError
from vfeval.pipeline import EmbeddingAggregator


@dataclass
class EmbeddingAggregatorConfig(AggregatorConfig):
    template: str = "{question} {option}"
    """How a multiple-choice option becomes a text to embed (zero-shot scoring)."""


class IdentityAggregator(EmbeddingAggregator):
    def pool(self, embeddings: np.ndarray) -> np.ndarray:
        if len(embeddings) != 1:
            raise UsageError(
                f"aggregator 'identity' expects one clip per video but got {len(embeddings)} segments; "
                "unset pipeline.sampling.segments or use pipeline.aggregator.name=mean"
            )
        return embeddings[0]


class MeanAggregator(EmbeddingAggregator):
    def pool(self, embeddings: np.ndarray) -> np.ndarray:
        # Normalise each segment first so that a segment's weight does not depend on its norm.
        e = embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
        return e.mean(axis=0)


def make_identity(config: EmbeddingAggregatorConfig) -> IdentityAggregator:
    return IdentityAggregator(config.template)


def make_mean(config: EmbeddingAggregatorConfig) -> MeanAggregator:
    return MeanAggregator(config.template)
