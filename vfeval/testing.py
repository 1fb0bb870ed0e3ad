"""Helpers for tests of vfeval and of its plugins: tiny real videos whose frames carry their own index.

``index_frames(n)`` draws frames that each show their index as a 4×4 grid of black and white cells (16
bits, most significant first, row by row). Cells of 8×8 pixels or more survive H.264 and MPEG-4 at their
default quality, so ``read_index`` recovers the index from a decoded frame, even one resized by any
factor that keeps the grid. ``write_video`` and ``write_vfr_video`` encode such frames into real files
with PyAV, so tests can check which frame a reader returned without trusting the reader's own clock.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from vfeval.pipeline import Encoder

GRID = 4
"""The index is drawn as a ``GRID × GRID`` grid of cells, one bit each."""
_BLACK, _WHITE = 16, 235  # video range, so neither level is clipped by the yuv conversion


def index_frames(num_frames: int, height: int = 32, width: int = 32) -> np.ndarray:
    """``uint8 [num_frames, height, width, 3]`` grey frames; frame ``i`` shows ``i`` as a grid of bits.

    ``height`` and ``width`` must be multiples of 4 (and at least 32 for the code to survive lossy coding).
    """
    if num_frames >= 2 ** (GRID * GRID):
        raise ValueError(f"at most {2 ** (GRID * GRID) - 1} frames can carry their index")
    if height % GRID or width % GRID:
        raise ValueError(f"height and width must be multiples of {GRID}")
    index = np.arange(num_frames)
    shifts = np.arange(GRID * GRID - 1, -1, -1)
    bits = (index[:, None] >> shifts) & 1  # [T, 16], most significant bit first
    cells = np.where(bits, _WHITE, _BLACK).astype(np.uint8).reshape(num_frames, GRID, GRID)
    pixels = cells.repeat(height // GRID, axis=1).repeat(width // GRID, axis=2)  # [T, H, W]
    return np.repeat(pixels[..., None], 3, axis=-1)


def read_index(frame: np.ndarray) -> int:
    """The index drawn by ``index_frames`` into ``frame`` (``uint8 [H, W, 3]``), read from cell centres."""
    height, width = frame.shape[:2]
    grey = frame.astype(np.float32).mean(axis=-1)
    value = 0
    for row in range(GRID):
        for col in range(GRID):
            # The middle half of each cell: its edges blur into neighbours under lossy coding and resizing.
            top, left = row * height / GRID, col * width / GRID
            y0, y1 = int(top + height / GRID / 4), int(top + 3 * height / GRID / 4)
            x0, x1 = int(left + width / GRID / 4), int(left + 3 * width / GRID / 4)
            value = value * 2 + int(grey[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)].mean() > 128)
    return value


def _add_stream(
    container: av.container.OutputContainer,
    codec: str,
    rate: Fraction,
    frames: np.ndarray,
    gop: int,
    pix_fmt: str,
) -> av.video.stream.VideoStream:
    if codec == "libx264" and codec not in av.codecs_available:
        codec = "mpeg4"
    options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"} if codec == "libx264" else {}
    stream = container.add_stream(codec, rate=rate, options=options)
    stream.height, stream.width = frames.shape[1], frames.shape[2]
    stream.pix_fmt = pix_fmt
    stream.codec_context.gop_size = gop
    stream.thread_type = "AUTO"
    return stream


def _encode(
    container: av.container.OutputContainer,
    stream: av.video.stream.VideoStream,
    frames: np.ndarray,
    pts: list[int],
    time_base: Fraction,
) -> None:
    for array, stamp in zip(frames, pts, strict=True):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
        frame.pts, frame.time_base = stamp, time_base
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float = 8,
    codec: str = "libx264",
    gop: int = 12,
    pix_fmt: str = "yuv420p",
    rotation: int = 0,
) -> Path:
    """Encode ``frames`` (``uint8 [T, H, W, 3]``, even H and W) at a constant ``fps`` into ``path``.

    The container follows the file's extension (``.mp4``, ``.mkv``, ``.ts``...). A keyframe starts every
    ``gop`` frames. ``rotation`` (counter-clockwise degrees) is stored as display-matrix metadata, as
    phones do. libx264 falls back to mpeg4 only where libx264 is not built in.
    """
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001000)
    with av.open(str(path), mode="w") as container:
        stream = _add_stream(container, codec, rate, frames, gop, pix_fmt)
        if rotation:
            stream.set_display_rotation(rotation)
        _encode(container, stream, frames, list(range(len(frames))), 1 / rate)
    return path


def write_vfr_video(
    path: str | os.PathLike, frames: np.ndarray, pts_seconds: np.ndarray | list[float], gop: int = 12
) -> Path:
    """Encode ``frames`` (``uint8 [T, H, W, 3]``) with variable frame rate: frame ``i`` is shown from
    ``pts_seconds[i]`` (increasing, millisecond precision) until the next one."""
    path = Path(path)
    stamps = [round(float(t) * 1000) for t in pts_seconds]
    if any(b <= a for a, b in zip(stamps, stamps[1:], strict=False)):
        raise ValueError("pts_seconds must increase by at least a millisecond per frame")
    span = max(stamps[-1] - stamps[0], 1) / 1000
    # The encoder wants a rate for its rate control: give it the mean one.
    rate = Fraction(max(len(stamps) - 1, 1) / span).limit_denominator(1000)
    time_base = Fraction(1, 1000)
    with av.open(str(path), mode="w") as container:
        stream = _add_stream(container, "libx264", rate, frames, gop, "yuv420p")
        stream.codec_context.time_base = time_base
        stream.time_base = time_base
        _encode(container, stream, frames, stamps, time_base)
    return path


# -- fakes and plugin fixtures -------------------------------------------------------------------------


class ConstantEncoder(Encoder):
    """An encoder whose every embedding is the same unit vector: pipelines run, nothing is learned.

    Useful for testing tasks and runners without a model. ``calls`` counts clips embedded, so tests can check
    what was (not) recomputed.
    """

    def __init__(self, dim: int = 8) -> None:
        self.dim = dim
        self.calls = 0

    def fingerprint(self) -> dict:
        return {"weights": f"constant-{self.dim}"}

    def embed_video(self, clips: list[np.ndarray]) -> np.ndarray:
        self.calls += len(clips)
        out = np.zeros((len(clips), self.dim), dtype=np.float32)
        out[:, 0] = 1.0
        return out

    def embed_text(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        out[:, 0] = 1.0
        return out


@contextmanager
def registered_plugin(host: Any, plugin: Any, name: str = "test-plugin") -> Iterator[Any]:
    """Register ``plugin`` (a module or object with ``@vfeval.hookimpl`` functions) on ``host`` for the
    duration of a ``with`` block, and unregister it afterwards even if the block fails."""
    host.register(plugin, name)
    try:
        yield host
    finally:
        host.unregister(name)
