"""``nearest-caption``: answers ``generate`` requests by retrieval from a bank of captions.

The video window's segment embeddings are pooled (the mean of the L2-normalised segments, as ``mean``) and
the answer is the bank caption whose text embedding (``encoder.embed_text``) has the highest cosine with the
pooled video, the first in the bank on ties. With a dual encoder this makes any captioning or summarisation
task run end to end without a language model: the floor a generative pipeline must clear.

The bank (``pipeline.aggregator.bank``) is a caption file in any format of ``vfeval_baselines.caption_bank``;
the sha256 of its bytes is part of the aggregator's fingerprint, so a changed bank never reuses answers
cached with the old one. ``pattern`` keeps only the bank captions a regular expression matches
(``re.search``), so that the floor retrieves from the captions a generative model was trained on (the
captioner's ``data.caption_pattern``), not from every caption of the file; it is in the fingerprint too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from vfeval.config import AggregatorConfig
from vfeval.errors import UsageError
from vfeval.pipeline import Aggregator, VideoInputs, _normalise
from vfeval.requests import GENERATE, Request
from vfeval_baselines.caption_bank import embed_bank, load_bank


@dataclass
class NearestCaptionConfig(AggregatorConfig):
    name: str = "nearest-caption"
    bank: str = ""
    """The caption bank file (see the module docstring)."""
    pattern: str = ""
    """A regular expression: only the bank captions it matches (``re.search``); empty keeps them all."""


class NearestCaptionAggregator(Aggregator):
    needs: ClassVar[str | None] = "embeddings"
    requires: ClassVar[tuple[str, ...]] = ("embed_text",)

    def __init__(self, captions: list[str], digest: str, pattern: str = "") -> None:
        self.captions = captions
        self.digest = digest
        self.pattern = pattern
        self._bank: np.ndarray | None = None

    def fingerprint(self) -> dict[str, Any]:
        out: dict[str, Any] = {"bank_sha256": self.digest, "bank_size": len(self.captions)}
        if self.pattern:  # absent when unused: the fingerprints of existing records stay as they were
            out["bank_pattern"] = self.pattern
        return out

    def bank_embeddings(self) -> np.ndarray:
        """``float32 [B, D]`` unit rows, one per bank caption; computed once."""
        if self._bank is None:
            self._bank = embed_bank(self.encoder.embed_text, self.captions)
        return self._bank

    def answer(self, requests: list[Request], inputs: list[VideoInputs | None]) -> list[Any]:
        out: list[Any] = []
        for req, inp in zip(requests, inputs):
            if req.kind != GENERATE:
                raise UsageError(f"aggregator 'nearest-caption' answers only generate requests, not {req.kind!r}")
            if inp is None or inp.embeddings is None:
                raise UsageError("aggregator 'nearest-caption' needs a video window to describe")
            video = _normalise(_normalise(inp.embeddings).mean(axis=0, keepdims=True))[0]  # [D]
            scores = self.bank_embeddings() @ video  # [B]
            out.append(self.captions[int(np.argmax(scores))])  # argmax: the first of equal scores
        return out


def make_nearest_caption(config: NearestCaptionConfig) -> NearestCaptionAggregator:
    captions, digest = load_bank(config.bank, "pipeline.aggregator.bank")
    if config.pattern:
        try:
            rx = re.compile(config.pattern)
        except re.error as exc:
            raise UsageError(
                f"config: bad value for 'pipeline.aggregator.pattern': {config.pattern!r} is not a regular "
                f"expression ({exc})"
            ) from exc
        captions = [c for c in captions if rx.search(c)]
        if not captions:
            raise UsageError(
                f"config: 'pipeline.aggregator.pattern' {config.pattern!r} matches no caption of {config.bank}"
            )
    return NearestCaptionAggregator(captions, digest, config.pattern)
