"""``nearest-caption``: answers ``generate`` requests by retrieval from a bank of captions.

The video window's segment embeddings are pooled (the mean of the L2-normalised segments, as ``mean``) and
the answer is the bank caption whose text embedding (``encoder.embed_text``) has the highest cosine with the
pooled video, the first in the bank on ties. With a dual encoder this makes any captioning or summarisation
task run end to end without a language model: the floor a generative pipeline must clear.

The bank (``pipeline.aggregator.bank``) is a file of captions:

- ``.jsonl``: one JSON value per line, a string or an object with a ``caption``, ``sentence`` or ``text`` key
  (``train/captions.jsonl`` written by ``vfeval data synthetic`` is one);
- ``.csv``: a header with a ``caption``, ``sentence`` or ``text`` column;
- anything else: plain text, one caption per line.

The sha256 of the file's bytes is part of the aggregator's fingerprint, so a changed bank never reuses
answers cached with the old one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vfeval.config import AggregatorConfig
from vfeval.errors import UsageError
from vfeval.pipeline import Aggregator, VideoInputs
from vfeval.requests import GENERATE, Request

TEXT_KEYS = ("caption", "sentence", "text")
EMBED_CHUNK = 256
"""Bank captions embedded per ``embed_text`` call: always the same chunks, so the same bank embeddings."""
_HINT = ("expected a .jsonl, .csv or text file of captions, e.g. DIR/train/captions.jsonl written by "
         "`vfeval data synthetic --out DIR`")


@dataclass
class NearestCaptionConfig(AggregatorConfig):
    name: str = "nearest-caption"
    bank: str = ""
    """The caption bank file (see the module docstring)."""


def _caption(value: Any, where: str) -> str:
    if isinstance(value, dict):
        key = next((k for k in TEXT_KEYS if isinstance(value.get(k), str)), None)
        if key is None:
            raise UsageError(f"{where} has none of the keys {', '.join(TEXT_KEYS)} with a string value")
        value = value[key]
    if not isinstance(value, str):
        raise UsageError(f"{where} must be a string or an object with a caption, not {type(value).__name__}")
    return value.strip()


def read_bank(path: Path, text: str) -> list[str]:
    """The non-empty captions of a bank file's ``text``, in file order."""
    if path.suffix.lower() == ".jsonl":
        captions = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UsageError(f"caption bank {path}: line {n} is not JSON: {exc.msg}") from exc
                captions.append(_caption(value, f"caption bank {path}: line {n}"))
    elif path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        column = next((k for k in TEXT_KEYS if k in (reader.fieldnames or [])), None)
        if column is None:
            raise UsageError(f"caption bank {path}: the header needs a {', '.join(TEXT_KEYS)} column; it has "
                             f"{', '.join(reader.fieldnames or []) or 'none'}")
        captions = [(row[column] or "").strip() for row in reader]
    else:
        captions = [line.strip() for line in text.splitlines()]
    return [c for c in captions if c]


class NearestCaptionAggregator(Aggregator):
    needs: ClassVar[str | None] = "embeddings"
    requires: ClassVar[tuple[str, ...]] = ("embed_text",)

    def __init__(self, captions: list[str], digest: str) -> None:
        self.captions = captions
        self.digest = digest
        self._bank: np.ndarray | None = None

    def fingerprint(self) -> dict[str, Any]:
        return {"bank_sha256": self.digest, "bank_size": len(self.captions)}

    def bank_embeddings(self) -> np.ndarray:
        """``float32 [B, D]`` unit rows, one per bank caption; computed once."""
        if self._bank is None:
            parts = [np.asarray(self.encoder.embed_text(self.captions[i : i + EMBED_CHUNK]), dtype=np.float32)
                     for i in range(0, len(self.captions), EMBED_CHUNK)]
            self._bank = _normalise(np.concatenate(parts))
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


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def make_nearest_caption(config: NearestCaptionConfig) -> NearestCaptionAggregator:
    if not config.bank:
        raise UsageError(f"config: missing value for 'pipeline.aggregator.bank'; {_HINT}")
    path = Path(config.bank).expanduser()
    if not path.is_file():
        raise UsageError(f"config: 'pipeline.aggregator.bank': caption bank {path} not found; {_HINT}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"caption bank {path} is not UTF-8 text: {exc.reason}") from exc
    captions = read_bank(path, text)
    if not captions:
        raise UsageError(f"caption bank {path} holds no captions; {_HINT}")
    return NearestCaptionAggregator(captions, hashlib.sha256(data).hexdigest())
