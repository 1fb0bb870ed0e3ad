"""``caption``: answers ``generate`` requests with what the encoder wrote about the window (video-first captioners).

A video-to-text encoder (``describe``) such as ``videofirst-captioner`` sees the whole window as one clip and
writes its caption or summary itself; this aggregator hands that text back as the answer. With
``pipeline.sampling.segments`` every segment gets its own caption and the answer joins them in temporal
order with ``separator`` (no language model rewrites them: that is the ``llm`` aggregator, LLM over segments).

The task's prompt is not read: a captioner writes what it was trained to write after its own prompt
(``pipeline.encoder.prompt``), which is part of the encoder's recorded config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from vfeval.config import AggregatorConfig
from vfeval.errors import UsageError
from vfeval.pipeline import Aggregator, VideoInputs
from vfeval.requests import GENERATE, Request


@dataclass
class CaptionConfig(AggregatorConfig):
    name: str = "caption"
    separator: str = ". "
    """Joins the captions of several segments of one window (``pipeline.sampling.segments``)."""


class CaptionAggregator(Aggregator):
    needs: ClassVar[str | None] = "captions"

    def __init__(self, config: CaptionConfig) -> None:
        self.config = config

    def answer(self, requests: list[Request], inputs: list[VideoInputs | None]) -> list[Any]:
        out: list[Any] = []
        for req, inp in zip(requests, inputs):
            if req.kind != GENERATE:
                raise UsageError(f"aggregator 'caption' answers only generate requests, not {req.kind!r}")
            if inp is None or inp.captions is None:
                raise UsageError("aggregator 'caption' needs a video window to describe")
            out.append(self.config.separator.join(c.strip() for c in inp.captions if c.strip()))
        return out


def make_caption(config: CaptionConfig) -> CaptionAggregator:
    return CaptionAggregator(config)
