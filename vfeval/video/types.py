"""Plain data that leaves the video reader."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Clip:
    """Frames sampled from one segment of a video window."""

    frames: np.ndarray
    """``uint8 [T, H, W, 3]`` RGB."""
    times: np.ndarray
    """``float64 [T]``: presentation time in seconds (from the start of the stream) of each frame."""
    start: float
    """Start of the segment in seconds."""
    end: float
    """End of the segment in seconds."""


@dataclass
class VideoInfo:
    path: str
    duration: float
    """Seconds."""
    fps: float
    """Average frame rate of the stream."""
    width: int
    height: int
    num_frames: int | None
    codec: str
