"""Text → token ids for the video-first encoder's text towers, shared by the torch and the JAX backend.

Everything here returns numpy arrays; each backend turns them into its own tensors. Three tokenizers:
- ``byte_tokenize``: UTF-8 bytes (the small tower with ``text=bytes``);
- ``word_tokenize``: hashed words (``text=words``);
- ``clip_tokenize``: CLIP's BPE tokenizer from Hugging Face (``text=clip``).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np

WORD = re.compile(r"\w+|[^\w\s]")
WORD_BUCKETS = 8192
"""Rows of the word tower's embedding table: words are hashed into them, so no vocabulary file is needed."""
BYTE_VOCAB = 258
"""Rows of the byte tower's embedding table: padding 0, bytes 1..256, the start token 257."""


def _pad(rows: list[list[int]]) -> dict[str, np.ndarray]:
    ids = np.zeros((len(rows), max(map(len, rows))), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return {"ids": ids, "mask": ids != 0}


def byte_tokenize(texts: list[str], length: int) -> dict[str, np.ndarray]:
    """UTF-8 bytes as token ids 1..256 after a start token 257; 0 pads. Returns ``ids``/``mask`` ``[B, L]``."""
    return _pad([[257] + [b + 1 for b in text.encode("utf-8")][: length - 1] for text in texts])


def word_id(word: str, buckets: int = WORD_BUCKETS) -> int:
    """A word's row: BLAKE2b of its UTF-8 bytes (stable across runs and machines) mod ``buckets - 2``, plus 2."""
    digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
    return 2 + int.from_bytes(digest, "little") % (buckets - 2)


def word_tokenize(texts: list[str], length: int, buckets: int = WORD_BUCKETS) -> dict[str, np.ndarray]:
    """Lower-cased words and punctuation marks, each hashed to an id in ``2..buckets-1`` (``word_id``) after
    a start token 1; 0 pads. Returns ``ids``/``mask`` ``[B, L]``.

    The hashing trick (Weinberger et al. 2009): any word gets an id, a word never seen in training
    included, and two words share a row only by a rare collision.
    """
    return _pad([[1] + [word_id(w, buckets) for w in WORD.findall(text.lower())][: length - 1] for text in texts])


def clip_tokenize(tokenizer: Any, texts: list[str], length: int) -> dict[str, np.ndarray]:
    """CLIP's tokenizer, padded to the longest text and cut at ``length``: ``input_ids``/``attention_mask`` ``[B, L]``."""
    tokens = tokenizer(list(texts), padding=True, truncation=True, max_length=length, return_tensors="np")
    return {
        "input_ids": np.asarray(tokens["input_ids"], dtype=np.int64),
        "attention_mask": np.asarray(tokens["attention_mask"], dtype=np.int64),
    }


def shifted_positions(mask: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """``int64 [B]``: for each text (``mask`` ``[B, L]``) a start position drawn uniformly from those that keep
    it inside a table of ``length`` positions.

    Randomised positions (after Ruoss et al. 2023): trained at one offset, a text tower with absolute
    position embeddings reads "red" at position 12 as something else than at position 8, so the same
    words after a longer prefix (a question instead of a caption's opening) mean another order. Drawn
    offsets make only the relative arrangement of the words carry meaning.
    """
    room = np.clip(length - np.asarray(mask).sum(1), 0, None)
    return np.minimum((rng.random(len(room)) * (room + 1)).astype(np.int64), room)
