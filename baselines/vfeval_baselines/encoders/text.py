"""A non-learned text encoder: hashed words and character trigrams, signed-projected to a fixed size.

It gives the ``blind`` baseline a text embedding that needs no weights: texts that share words and
spellings are close. Deterministic across processes and machines (hashes are sha1, not Python's hash).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from vfeval.config import EncoderConfig
from vfeval.pipeline import Encoder

_WORD = re.compile(r"[a-z0-9]+")


@dataclass
class HashedTextConfig(EncoderConfig):
    name: str = "hashed-text"
    dim: int = 512


def _bucket(token: str, dim: int) -> tuple[int, float]:
    h = hashlib.sha1(token.encode()).digest()
    return int.from_bytes(h[:4], "little") % dim, 1.0 if h[4] & 1 else -1.0


def features(text: str) -> list[str]:
    """Words, and character trigrams of each word padded with '#', as in fastText-style hashing."""
    words = _WORD.findall(text.lower())
    grams = [f"#{w}#"[i : i + 3] for w in words for i in range(len(w))]
    return [f"w:{w}" for w in words] + [f"c:{g}" for g in grams]


class HashedTextEncoder(Encoder):
    def __init__(self, dim: int = 512) -> None:
        self.dim = dim

    def fingerprint(self) -> dict:
        return {"weights": f"hashed-text-sha1-{self.dim}"}

    def embed_text(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for tok in features(text):
                j, sign = _bucket(tok, self.dim)
                out[i, j] += sign
        return out


def make_encoder(config: HashedTextConfig) -> HashedTextEncoder:
    return HashedTextEncoder(config.dim)
