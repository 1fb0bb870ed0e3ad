"""What the two ``videoprism`` backends share: batching, tokenising, fingerprints and refusals.

A backend implements ``_video`` (``float32 [B, T, H, W, 3]`` in [0, 1] -> ``[B, D]``) and ``_text`` (token
ids and validity ``int32 [B, S]`` -> ``[B, D]``), both returning numpy; nothing of torch or jax leaves it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vfeval.errors import UsageError
from vfeval.hashing import sha256_file
from vfeval.pipeline import Encoder
from vfeval_videoprism.checkpoint import Arch
from vfeval_videoprism.config import VideoPrismConfig
from vfeval_videoprism.inputs import (
    TOKENIZER_FILES,
    Source,
    frames_to_input,
    load_tokenizer,
    tokenize,
    weights_id,
)


def check_config(cfg: VideoPrismConfig) -> None:
    for key in ("batch_size", "text_batch_size"):
        if getattr(cfg, key) < 1:
            raise UsageError(f"config: bad value for 'pipeline.encoder.{key}': it must be >= 1")


def tokenizer_id(where: str) -> Any:
    """The sha256 of a local tokenizer's files, or the hub name it was loaded by."""
    folder = Path(where).expanduser()
    if folder.is_dir():
        return {f: sha256_file(folder / f).hexdigest() for f in TOKENIZER_FILES if (folder / f).is_file()}
    return where


class VideoPrismEncoder(Encoder):
    def __init__(self, cfg: VideoPrismConfig, source: Source, arch: Arch) -> None:
        self.config = cfg
        self.source = source
        self.arch = arch
        self.weights = weights_id(source)
        self.tokenizer = load_tokenizer(cfg, source) if arch.lvt else None

    # -- what a backend implements --
    def _video(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _text(self, ids: np.ndarray, valid: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- the encoder interface --
    def fingerprint(self) -> dict[str, Any]:
        out: dict[str, Any] = {"weights": self.weights}
        if self.tokenizer is not None:
            out["tokenizer"] = tokenizer_id(self.config.tokenizer or str(self.source.folder))
            out["text_length"] = self.arch.text.max_length
        return out

    def embed_video(self, clips: list[np.ndarray]) -> np.ndarray:
        """clips: each ``uint8 [T, H, W, 3]`` -> ``float32 [len(clips), D]``; consecutive clips of one shape
        share a forward pass of at most ``batch_size``."""
        out: list[np.ndarray] = []
        i = 0
        while i < len(clips):
            j = i + 1
            while j < len(clips) and j - i < self.config.batch_size and clips[j].shape == clips[i].shape:
                j += 1
            out.append(np.asarray(self._video(frames_to_input(clips[i:j], self.arch.patch)), np.float32))
            i = j
        return np.concatenate(out) if out else np.zeros((0, self.arch.hidden), np.float32)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        if self.tokenizer is None:
            raise UsageError(f"videoprism: {self.source.name!r} is a video-only checkpoint (no text tower); use a "
                             "video-text (LvT) one such as google/videoprism-lvt-base-f16r288 for text")
        if not texts:
            return np.zeros((0, self.arch.text.hidden), np.float32)
        out = []
        for i in range(0, len(texts), self.config.text_batch_size):
            ids, valid = tokenize(self.tokenizer, texts[i : i + self.config.text_batch_size],
                                  self.arch.text.max_length)
            out.append(np.asarray(self._text(ids, valid), np.float32))
        return np.concatenate(out)
