"""A non-learned motion encoder: where in the frame and when in the clip the picture changes.

For a clip ``uint8 [T, H, W, 3]`` it takes the absolute difference of each pair of consecutive frames,
scaled to [0, 1], and averages it

- over time within each cell of a ``grid × grid`` spatial grid, per colour channel: ``grid * grid * 3``
  values saying where things move;
- over the whole frame within each of ``bins`` equal spans of the clip: ``bins`` values saying when.

The embedding is the two parts concatenated, ``float32 [grid * grid * 3 + bins]``. A static clip gives
zeros. It cannot embed text, so it serves ``video_embedding`` requests (retrieval between videos, linear
probes), not zero-shot multiple choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vfeval.config import EncoderConfig
from vfeval.errors import UsageError
from vfeval.pipeline import Encoder

VERSION = "motion-1"
"""Names the computation; part of the fingerprint, so a changed formula never reuses cached features."""


@dataclass
class MotionConfig(EncoderConfig):
    name: str = "motion"
    grid: int = 4
    """Cells per side of the spatial grid."""
    bins: int = 4
    """Spans the clip's motion-over-time profile is averaged into."""


def _spans(n: int, parts: int) -> np.ndarray:
    """Start indices of ``parts`` near-equal, non-empty spans of ``range(n)`` (requires ``n >= parts``)."""
    return (np.arange(parts) * n) // parts


def _span_means(x: np.ndarray, parts: int, axis: int) -> np.ndarray:
    """Mean of ``x`` over ``parts`` near-equal spans along ``axis``."""
    n = x.shape[axis]
    starts = _spans(n, parts)
    sizes = np.diff(np.append(starts, n))
    shape = [1] * x.ndim
    shape[axis] = parts
    return np.add.reduceat(x, starts, axis=axis) / sizes.reshape(shape)


class MotionEncoder(Encoder):
    def __init__(self, grid: int = 4, bins: int = 4) -> None:
        self.grid, self.bins = grid, bins

    @property
    def dim(self) -> int:
        return self.grid * self.grid * 3 + self.bins

    def fingerprint(self) -> dict:
        return {"weights": VERSION}

    def embed_video(self, clips: list[np.ndarray]) -> np.ndarray:
        """clips: each ``uint8 [T, H, W, 3]`` → ``float32 [len(clips), grid * grid * 3 + bins]``."""
        if not clips:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._embed_clip(np.asarray(c)) for c in clips]).astype(np.float32)

    def _embed_clip(self, frames: np.ndarray) -> np.ndarray:
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"motion expects uint8 [T, H, W, 3] frames, got shape {frames.shape}")
        t, h, w, _ = frames.shape
        if h < self.grid or w < self.grid:
            raise ValueError(
                f"motion grid {self.grid} needs frames of at least {self.grid}x{self.grid}, got {h}x{w}"
            )
        if t < 2:  # no pair of frames: nothing moved
            return np.zeros(self.dim, dtype=np.float32)
        x = frames.astype(np.float32) / 255.0
        diff = np.abs(x[1:] - x[:-1])  # [T-1, H, W, 3]
        cells = _span_means(_span_means(diff, self.grid, axis=1), self.grid, axis=2)  # [T-1, g, g, 3]
        where = cells.mean(axis=0).reshape(-1)  # [g * g * 3]
        profile = diff.mean(axis=(1, 2, 3))  # [T-1]
        if len(profile) < self.bins:
            # Fewer steps than bins: each bin takes the step its centre falls in.
            centres = ((np.arange(self.bins) + 0.5) * len(profile) / self.bins).astype(int)
            when = profile[centres]
        else:
            when = _span_means(profile, self.bins, axis=0)
        return np.concatenate([where, when]).astype(np.float32)


def make_encoder(config: MotionConfig) -> MotionEncoder:
    for key in ("grid", "bins"):
        if getattr(config, key) < 1:
            raise UsageError(
                f"config: bad value for 'pipeline.encoder.{key}': {getattr(config, key)}; must be >= 1"
            )
    return MotionEncoder(config.grid, config.bins)
