"""Render scenes to frames with numpy and write them as H.264 mp4 files with PyAV.

Frames are ``uint8 [T, H, W, 3]`` RGB, frame ``i`` shows the scene at time ``i / fps``. Shapes are
drawn as boolean masks computed for all the frames of an event at once, so a 96-frame video takes
about a millisecond to draw; encoding dominates the cost.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np

from vfeval.errors import UsageError

from .scenes import BACKGROUND, COLOURS, Event, Scene


def check_video_shape(width: int, height: int, fps: int) -> None:
    """Raise a ``UsageError`` unless x264 can write ``width`` x ``height`` frames at ``fps``."""
    # yuv420p halves the chroma planes, so x264 refuses odd sizes; say so before any encoding starts.
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise UsageError(f"frame size must be even and at least 16 pixels, got {width}x{height}")
    if not isinstance(fps, int) or fps < 1:
        raise UsageError(f"fps must be a positive integer, got {fps!r}")


def _mask(event: Event, t: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixels covered by ``event`` at times ``t`` (``[N]``): ``bool [N, H, W]``."""
    cx, cy = event.centre(t)
    # Pixel centres in pixels; the radius scales with the shorter side so shapes are not squashed.
    cx, cy = cx[:, None, None] * width, cy[:, None, None] * height
    r = event.size * min(width, height)
    dx = np.arange(width)[None, None, :] + 0.5 - cx
    dy = np.arange(height)[None, :, None] + 0.5 - cy
    if event.shape == "circle":
        return dx**2 + dy**2 <= r**2
    if event.shape == "square":
        # Half-side 0.85 r gives about the same area as the circle, so size alone does not tell shapes apart.
        return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    if event.shape == "triangle":
        # Apex up at (cx, cy - r), base at cy + r, base half-width r: the half-width grows as (dy + r) / 2.
        return (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    raise ValueError(f"unknown shape {event.shape!r}")


def render(scene: Scene, fps: int = 4, width: int = 64, height: int = 64) -> np.ndarray:
    """Frames of ``scene`` at ``fps``: ``uint8 [round(duration * fps), height, width, 3]``."""
    check_video_shape(width, height, fps)
    n = round(scene.duration * fps)
    frames = np.empty((n, height, width, 3), dtype=np.uint8)
    frames[:] = BACKGROUND
    times = np.arange(n) / fps
    for event in scene.events:
        # Visible on [start, end): it appears at its start time and is gone at its end. Times are
        # sorted, so the visible frames are one contiguous run and a slice (a view) can be painted.
        i0, i1 = np.searchsorted(times, [event.start, event.end], side="left")
        if i1 > i0:
            frames[i0:i1][_mask(event, times[i0:i1], width, height)] = COLOURS[event.colour]
    return frames


def write_mp4(path: str | Path, frames: np.ndarray, fps: int, crf: int = 20, gop: int | None = None) -> Path:
    """Write ``frames`` (``uint8 [T, H, W, 3]``) as an H.264 (libx264, yuv420p) mp4 at ``fps``.

    ``gop`` defaults to one keyframe per second so that seeking to any second is cheap. The same
    frames always give the same bytes.
    """
    import av  # PyAV is only needed when writing; keep the import off the package's import path.

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _, height, width, _ = frames.shape
    check_video_shape(width, height, fps)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop or fps
        # x264 keeps some state per process (tables it fills lazily), and with its own threads, trellis
        # quantisation or macroblock-tree rate control on, the bytes (and sometimes pixels) of a video
        # depended on what the process had encoded before. Without them the same frames always give
        # the same file, whatever the order or the worker process. The frames are tiny, so threads
        # would cost more than they save; the pool in `write_videos` uses the cores instead.
        stream.codec_context.thread_count = 1
        stream.options = {
            "crf": str(crf),
            "preset": "superfast",
            "x264-params": "threads=1:trellis=0:mbtree=0",
        }
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush the frames x264 still holds
            container.mux(packet)
    return path


def write_scene(scene: Scene, path: str | Path, fps: int = 4, width: int = 64, height: int = 64) -> Path:
    """Render ``scene`` and write it to ``path``."""
    return write_mp4(path, render(scene, fps, width, height), fps)


def _write_job(job: tuple[dict, str, int, int, int]) -> str:
    scene, path, fps, width, height = job
    return str(write_scene(Scene.from_dict(scene), path, fps, width, height))


def write_videos(
    jobs: Sequence[tuple[Scene, Path]], fps: int, width: int, height: int, workers: int | None = None
) -> list[Path]:
    """Write each ``(scene, path)`` job; with ``workers > 1`` in a process pool.

    ``workers=None`` uses every core. The output does not depend on ``workers``: each video is
    rendered from its own scene alone.
    """
    check_video_shape(width, height, fps)
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    args = [(scene.to_dict(), str(path), fps, width, height) for scene, path in jobs]
    if workers == 1:
        return [Path(_write_job(a)) for a in args]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return [Path(p) for p in pool.map(_write_job, args, chunksize=max(1, len(args) // (4 * workers)))]
