"""Sampled frames of a video window, read with PyAV.

``read_window`` decodes only near the wanted times: when the next time lies far ahead of the decode
position it seeks to the keyframe at or before that time and decodes forward from there. Only the frames
it returns are converted to RGB (straight to the output size, by swscale). ``read_all_frames_then_pick``
decodes every frame instead; it is the reference that tests and benchmarks compare against.

Times are presentation timestamps (``pts × time_base``) measured from the stream's start time, so a
stream that starts at 1.4 s (MPEG-TS) has its first frame at 0. ``vfeval.video.sampling`` states which
frame a time selects. Frames are rotated upright when the stream carries a rotation (a display matrix,
or the older ``rotate`` tag), in quarter turns only; other matrices (flips, shears) are ignored.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from vfeval.config import SamplingConfig
from vfeval.errors import DataError
from vfeval.requests import VideoWindow
from vfeval.video.sampling import frame_times, segment_bounds, validate
from vfeval.video.types import Clip, VideoInfo

SEEK_GAP = 1.0
"""Seconds: a wanted time closer than this to the decode position is reached by decoding forward."""
END_SLACK = 2.0
"""Seconds (or two frame intervals if longer) that the last frame may be held before the stream is
considered cut short: a file whose header promises more than it holds raises ``DataError``."""
_TIME_SLACK = 1e-6  # a frame at t + 1 µs still counts as shown at t: float rounding of t is not a choice

_TIMELESS = "no frame timestamps (a raw stream? remux it into a container: ffmpeg -i IN -c copy OUT.mp4)"

Container = av.container.InputContainer
Stream = av.video.stream.VideoStream
Picked = list[tuple[float, np.ndarray]]
"""``(presentation time, uint8 [H, W, 3])`` for each wanted time."""


@contextmanager
def _opened(path: str | os.PathLike) -> Iterator[tuple[Container, Stream]]:
    """The container and its first video stream; any PyAV error inside becomes a ``DataError``."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"video file not found: {p}")
    if p.stat().st_size == 0:
        raise DataError(f"video file is empty (0 bytes): {p}")
    try:
        container = av.open(str(p))
    except av.error.FFmpegError as exc:
        raise DataError(f"cannot open {p}: corrupt or not a video ({exc})") from exc
    try:
        if not container.streams.video:
            raise DataError(f"no video stream in {p}")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yield container, stream
    except av.error.FFmpegError as exc:
        raise DataError(f"cannot decode {p}: {exc}") from exc
    finally:
        container.close()


def _seconds(frame: av.VideoFrame, stream: Stream) -> float:
    if frame.pts is None:
        raise DataError(_TIMELESS)
    return float((frame.pts - (stream.start_time or 0)) * stream.time_base)


def _duration(container: Container, stream: Stream, path: str) -> float:
    """Seconds, from the stream, its Matroska ``DURATION`` tag, the container, or failing all, its packets."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    hours, _, rest = stream.metadata.get("DURATION", "").partition(":")  # Matroska: HH:MM:SS.nnnnnnnnn
    minutes, _, seconds = rest.partition(":")
    if hours.isdigit() and minutes.isdigit():
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    if container.duration:
        return container.duration / av.time_base
    with _opened(path) as (scan, video):  # no header says: read packet timestamps (no decoding)
        end = max((p.pts + (p.duration or 0) for p in scan.demux(video) if p.pts is not None), default=None)
        if end is None:
            raise DataError(f"{path}: {_TIMELESS}")
        return float((end - (video.start_time or 0)) * video.time_base)


def probe(path: str | os.PathLike) -> VideoInfo:
    """Duration, average frame rate, size, frame count (None when the header does not say) and codec."""
    with _opened(path) as (container, stream):
        duration = _duration(container, stream, str(path))
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else (stream.frames / duration if stream.frames and duration else 0.0)
        ctx = stream.codec_context
        return VideoInfo(str(path), duration, fps, ctx.width, ctx.height, stream.frames or None, ctx.name)


class _Converter:
    """Turns a chosen frame into ``uint8 [H, W, 3]``: RGB at the output size, upright, centre-cropped.

    Converts each distinct frame once: the same frame chosen for consecutive times is repeated."""

    def __init__(self, sampling: SamplingConfig, stream: Stream) -> None:
        self.size, self.crop = sampling.size, sampling.crop
        tag = stream.metadata.get("rotate", "0")
        self.rotate_tag = -int(tag) if tag.lstrip("-").isdigit() else 0  # the tag turns clockwise
        self.last: tuple[av.VideoFrame | None, np.ndarray | None] = (None, None)
        # One reformatter keeps its swscale context: a fresh one per frame costs milliseconds to set up.
        self.reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if self.last[0] is not frame:
            self.last = (frame, self._convert(frame))
        return self.last[1]

    def _convert(self, frame: av.VideoFrame) -> np.ndarray:
        width, height = frame.width, frame.height
        if self.size:  # the short side stays short under quarter turns, so scale before rotating
            scale = self.size / min(width, height)
            width, height = max(1, round(width * scale)), max(1, round(height * scale))
        rgb = self.reformatter.reformat(
            frame, width=width, height=height, format="rgb24", interpolation="AREA"
        ).to_ndarray()
        turns = round((getattr(frame, "rotation", 0) or self.rotate_tag) / 90) % 4
        rgb = np.rot90(rgb, turns) if turns else rgb  # counter-clockwise, as the display matrix
        if self.crop:
            h, w = rgb.shape[:2]
            if self.crop > min(h, w):
                raise DataError(f"frames are {h}x{w}, smaller than the {self.crop}x{self.crop} crop")
            top, left = (h - self.crop) // 2, (w - self.crop) // 2
            rgb = rgb[top : top + self.crop, left : left + self.crop]
        return np.ascontiguousarray(rgb)


class _Cursor:
    """Walks forward through a stream and gives the frame shown at each of a non-decreasing run of times.

    Seeking pays for the decode from the landing keyframe up to the time; decoding forward pays for every
    frame in between. So it seeks only over a gap longer than ``SEEK_GAP`` and longer than any group of
    pictures seen so far (else the keyframe before the time may well be behind the decode position).
    """

    def __init__(self, container: Container, stream: Stream) -> None:
        self.container, self.stream = container, stream
        self.frames: Iterator[av.VideoFrame] | None = None
        self.shown: av.VideoFrame | None = None  # the last frame at or before the latest time
        self.ahead: av.VideoFrame | None = None  # the next decoded frame; None once the stream has ended
        self.key_time: float | None = None
        self.gop = 0.0  # the longest keyframe interval seen
        self.back = 0.0  # seek this far before a time: some demuxers (MPEG-TS) land after the target

    def frame_at(self, t: float) -> av.VideoFrame:
        if self.frames is None and t <= SEEK_GAP:
            self.frames = self.container.decode(self.stream)
            self._advance()
        elif self.frames is None or self._worth_seeking(t):
            self._seek(t)
        while self.ahead is not None and _seconds(self.ahead, self.stream) <= t + _TIME_SLACK:
            self.shown = self.ahead
            self._advance()
        frame = self.ahead if self.shown is None else self.shown  # before the first frame: the first frame
        if frame is None:
            raise DataError("the video has no decodable frames")
        return frame

    def _advance(self) -> None:
        assert self.frames is not None
        self.ahead = next(self.frames, None)
        if self.ahead is not None and self.ahead.key_frame:
            now = _seconds(self.ahead, self.stream)
            if self.key_time is not None:
                self.gop = max(self.gop, now - self.key_time)
            self.key_time = now

    def _worth_seeking(self, t: float) -> bool:
        if self.ahead is None:
            return False  # the stream has ended: later times show its last frame
        pos = _seconds(self.ahead, self.stream)
        # No keyframe has appeared since key_time, so the current group is at least this long.
        gop = max(self.gop, pos - self.key_time) if self.key_time is not None else self.gop
        return t - pos > max(SEEK_GAP, gop) + self.back

    def _seek(self, t: float) -> None:
        """Land at or before ``t``: seek to the keyframe before it, further back each time a seek lands late."""
        back = self.back
        while True:
            when = max(t - back, -1.0)  # a negative time rewinds to the first frame
            offset = (self.stream.start_time or 0) + math.floor(when / self.stream.time_base)
            self.container.seek(offset, stream=self.stream, backward=True, any_frame=False)
            self.frames, self.shown, self.key_time = self.container.decode(self.stream), None, None
            self._advance()
            if when < 0 or (self.ahead is not None and _seconds(self.ahead, self.stream) <= t + _TIME_SLACK):
                break
            back = max(2 * back, 1.0)
        self.back = back

    def ended_at(self) -> float | None:
        """Time of the last frame if the stream has run out, else None."""
        return None if self.ahead is not None or self.shown is None else _seconds(self.shown, self.stream)


def _pick_seeking(
    container: Container, stream: Stream, times: np.ndarray, convert: _Converter
) -> tuple[Picked, float | None]:
    cursor = _Cursor(container, stream)
    picked: Picked = []
    for t in times:
        frame = cursor.frame_at(float(t))
        picked.append((_seconds(frame, stream), convert(frame)))
    return picked, cursor.ended_at()


def _pick_decoding_all(
    container: Container, stream: Stream, times: np.ndarray, convert: _Converter
) -> tuple[Picked, float | None]:
    picked: Picked = []
    previous, i = None, 0
    for frame in container.decode(stream):
        now = _seconds(frame, stream)
        while i < len(times) and times[i] + _TIME_SLACK < now:  # times before this frame show the previous
            shown = frame if previous is None else previous
            picked.append((_seconds(shown, stream), convert(shown)))
            i += 1
        previous = frame
    if previous is None:
        raise DataError("the video has no decodable frames")
    last = (_seconds(previous, stream), convert(previous))
    return picked + [last] * (len(times) - i), last[0]


def _span(window: VideoWindow, duration: float) -> tuple[float, float]:
    """``[start, end)`` of the window in seconds, its end clamped to the end of the video."""
    start = 0.0 if window.start is None else float(window.start)
    end = duration if window.end is None else min(float(window.end), duration)
    if not 0 <= start < duration or end <= start:
        raise DataError(
            f"window [{window.start}, {window.end}) s lies outside the video {window.path} (0 to {duration:.3f} s)"
        )
    return start, end


def _read(
    window: VideoWindow, sampling: SamplingConfig, pick: Callable[..., tuple[Picked, float | None]]
) -> list[Clip]:
    """``pick(container, stream, sorted_times, convert)`` chooses the frames and says when the stream ended."""
    validate(sampling)
    with _opened(window.path) as (container, stream):
        duration = _duration(container, stream, window.path)
        bounds = segment_bounds(*_span(window, duration), sampling.segments)
        wanted = [frame_times(s, e, sampling) for s, e in bounds]
        times = np.concatenate(wanted)
        order = np.argsort(times, kind="stable")
        picked, ended_at = pick(container, stream, times[order], _Converter(sampling, stream))
        rate = stream.average_rate or stream.guessed_rate
        slack = max(END_SLACK, 2 / float(rate)) if rate else END_SLACK
        if ended_at is not None and times.max() - ended_at > slack:
            raise DataError(
                f"{window.path} stops at {ended_at:.3f} s but its header says {duration:.3f} s "
                f"and frames up to {times.max():.3f} s were wanted: truncated or corrupt"
            )
    results = [picked[j] for j in np.argsort(order)]  # back to the order of the segments
    clips, k = [], 0
    for (s, e), ts in zip(bounds, wanted, strict=True):
        part, k = results[k : k + len(ts)], k + len(ts)
        clips.append(Clip(np.stack([a for _, a in part]), np.array([t for t, _ in part]), s, e))
    return clips


def read_window(window: VideoWindow, sampling: SamplingConfig) -> list[Clip]:
    """The frames of ``window`` chosen by ``sampling``: one ``Clip`` per segment (one if ``segments`` is None).

    Each clip has ``frames: uint8 [T, H, W, 3]`` with ``T`` the number of wanted times (a frame shown at two
    wanted times appears twice) and ``times: float64 [T]``, the presentation time of each frame returned.
    ``window.end`` None, or past the end of the video, means the end of the video. Raises ``DataError`` for
    a missing, empty, corrupt or truncated file, a file without video, or a window that starts outside it;
    ``UsageError`` for sampling settings that cannot work.
    """
    return _read(window, sampling, _pick_seeking)


def read_all_frames_then_pick(window: VideoWindow, sampling: SamplingConfig) -> list[Clip]:
    """``read_window`` by decoding every frame from the start: slow, simple, the reference for tests."""
    return _read(window, sampling, _pick_decoding_all)
