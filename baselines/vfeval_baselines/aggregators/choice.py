"""Aggregators that answer without looking at the video: the floors every result is read against.

- ``random``: seeded uniform scores, chance level (20% on 5-way questions); a request's scores depend only on
  the seed and the request, so they do not change with batch size or order.
- ``blind``: scores each option by the cosine between the question's and the option's text embedding (any
  encoder that embeds text): how far text alone gets.
- ``constant``: always the same option: checks answer priors (e.g. the share of answer k in a split).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from vfeval.config import AggregatorConfig
from vfeval.pipeline import Aggregator, VideoInputs
from vfeval.requests import CHOICE_SCORES, TEXT_EMBEDDING, VIDEO_EMBEDDING, Request


@dataclass
class RandomConfig(AggregatorConfig):
    name: str = "random"
    seed: int = 0
    dim: int = 64


@dataclass
class BlindConfig(AggregatorConfig):
    name: str = "blind"


@dataclass
class ConstantConfig(AggregatorConfig):
    name: str = "constant"
    choice: int = 0


class RandomAggregator(Aggregator):
    needs: ClassVar[str | None] = None

    def __init__(self, seed: int, dim: int) -> None:
        self.seed, self.dim = seed, dim

    def fingerprint(self) -> dict[str, Any]:
        return {"seed": self.seed, "dim": self.dim}

    def _rng(self, request: Request) -> np.random.Generator:
        digest = hashlib.sha256(f"{self.seed}:{request.key()}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def answer(self, requests: list[Request], inputs: list[VideoInputs | None]) -> list[Any]:
        out: list[Any] = []
        for req in requests:
            rng = self._rng(req)
            if req.kind == CHOICE_SCORES:
                out.append(rng.random(len(req.options)).astype(np.float32))
            elif req.kind in (VIDEO_EMBEDDING, TEXT_EMBEDDING):
                out.append(rng.standard_normal(self.dim).astype(np.float32))
            else:
                raise ValueError(f"random cannot answer {req.kind}")
        return out


class BlindAggregator(Aggregator):
    needs: ClassVar[str | None] = None
    requires: ClassVar[tuple[str, ...]] = ("embed_text",)

    def answer(self, requests: list[Request], inputs: list[VideoInputs | None]) -> list[Any]:
        out: list[Any] = []
        for req in requests:
            emb = np.asarray(self.encoder.embed_text([req.question or "", *req.options]), dtype=np.float32)
            emb = emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
            out.append((emb[1:] @ emb[0]).astype(np.float32))
        return out


class ConstantAggregator(Aggregator):
    needs: ClassVar[str | None] = None

    def __init__(self, choice: int) -> None:
        self.choice = choice

    def fingerprint(self) -> dict[str, Any]:
        return {"choice": self.choice}

    def answer(self, requests: list[Request], inputs: list[VideoInputs | None]) -> list[Any]:
        out = []
        for req in requests:
            scores = np.zeros(len(req.options), dtype=np.float32)
            scores[self.choice] = 1.0
            out.append(scores)
        return out


def make_random(config: RandomConfig) -> RandomAggregator:
    return RandomAggregator(config.seed, config.dim)


def make_blind(config: BlindConfig) -> BlindAggregator:
    return BlindAggregator()


def make_constant(config: ConstantConfig) -> ConstantAggregator:
    return ConstantAggregator(config.choice)
