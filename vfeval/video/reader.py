"""Sampled frames of a video window, read with PyAV.

``read_window`` decodes only near the wanted times: when the next time lies far ahead of the decode
position it seeks to the keyframe at or before that time and decodes forward from there. Only the frames
it returns are converted to RGB (straight to the output size, by swscale). ``read_all_frames_then_pick``
decodes every frame instead; it is the reference that tests and benchmarks compare against.

Times are presentation timestamps (``pts × time_base``) measured from the stream's start time, so a
stream that starts at 1.4 s (MPEG-TS) has its first frame at 0. ``vfeval.video.sampling`` states which
frame a time selects. Frames are rotated upright when the stream carries a rotation (a display matrix,
or the older ``rotate`` tag), in quarter turns only; other matrices (flips, shears) are ignored.

Every ``DataError`` message starts with a short reason and a colon (``missing:``, ``empty:``, ``corrupt:``,
``truncated:``, ``outside:``, ``unsupported-codec:``...): a run counts its failed samples by that reason.
``threads`` is how many threads one read may use: 0 every core, 1 the calling thread only, which is what a
pool of decoding processes wants. Decoding everything gives them to FFmpeg (frame and slice threads). Seeking
gives them to readers instead (``seek_readers``): the wanted times are cut into runs, one per thread, each read
by its own demuxer and single-threaded decoder side by side (PyAV releases the GIL while it decodes). FFmpeg's
frame threads help little there, since every seek flushes their pipeline, while runs far apart in the video
share no work.
"""

from __future__ import annotations

import copy
import math
import os
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
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
END_SLACK_SHARE = 0.1
"""The last frame may be held this long (seconds, or this share of a shorter video, or two frame intervals if
longer) before the stream is considered cut short: a file whose header promises more than it holds raises
``DataError("truncated: ...")``."""
SKIP_MARGIN = 0.25
"""Seconds (or three frame intervals if longer) before a wanted time from which every frame is decoded; frames
further back that no other frame refers to (most B-frames) are skipped by the decoder."""
TIME_SLACK = 1e-6  # a frame at t + 1 µs still counts as shown at t: float rounding of t is not a choice

_TIMELESS = (
    "no-timestamps: no frame timestamps (a raw stream? remux it into a container: ffmpeg -i IN -c copy OUT.mp4)"
)

Container = av.container.InputContainer
Stream = av.video.stream.VideoStream
Picked = list[tuple[float, np.ndarray]]
"""``(presentation time, uint8 [H, W, 3])`` for each wanted time."""


@contextmanager
def _opened(path: str | os.PathLike, threads: int = 0) -> Iterator[tuple[Container, Stream]]:
    """The container and its first video stream; any PyAV error inside becomes a ``DataError``."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError:
        raise DataError(f"missing: video file not found: {p}") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"missing: {p} is a folder, not a video file")
    if stat.S_ISREG(mode) and p.stat().st_size == 0:  # not for pipes and devices, which report 0 bytes
        raise DataError(f"empty: video file is empty (0 bytes): {p}")
    try:
        container = av.open(str(p))
    except av.error.FFmpegError as exc:
        raise DataError(f"corrupt: cannot open {p}: corrupt or not a video ({exc})") from exc
    try:
        if not container.streams.video:
            raise DataError(f"no-video: no video stream in {p}")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise DataError(f"unsupported-codec: this FFmpeg build has no decoder for the video stream of {p}")
        # Frame and slice threads; one thread means none at all (FFmpeg's 0 means one per core).
        stream.thread_type = "AUTO" if threads != 1 else "SLICE"
        stream.thread_count = max(0, threads)
        yield container, stream
    except av.error.FFmpegError as exc:
        raise DataError(f"corrupt: cannot decode {p}: {exc}") from exc
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
            raise DataError(f"{_TIMELESS} in {path}")
        return float((end - (video.start_time or 0)) * video.time_base)


def probe(path: str | os.PathLike) -> VideoInfo:
    """Duration, average frame rate, size, frame count (None when the header does not say) and codec."""
    with _opened(path, threads=1) as (container, stream):
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

    def fresh(self) -> _Converter:
        """A converter with the same settings and its own state, for another thread."""
        other = copy.copy(self)
        other.last, other.reformatter = (None, None), VideoReformatter()
        return other

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
                raise DataError(f"too-small: frames are {h}x{w}, smaller than the {self.crop}x{self.crop} crop")
            top, left = (h - self.crop) // 2, (w - self.crop) // 2
            rgb = rgb[top : top + self.crop, left : left + self.crop]
        return np.ascontiguousarray(rgb)


class _NoFrames(Exception):
    """Not one frame of the stream decodes."""


class _Unseekable(Exception):
    """The demuxer cannot seek in this file (a Matroska file cut before its index, a stream)."""


class _Cursor:
    """Walks forward through a stream and gives the frame shown at each of a non-decreasing run of times.

    Seeking pays for the decode from the landing keyframe up to the time; decoding forward pays for every
    frame in between. So it seeks only over a gap longer than ``SEEK_GAP`` and longer than any group of
    pictures seen so far (else the keyframe before the time may well be behind the decode position).

    On the way to a time, packets more than ``SKIP_MARGIN`` before it are decoded with FFmpeg's
    ``skip_frame=NONREF``: frames that no later frame refers to are dropped unseen, which cannot change any
    frame that is decoded. The frame shown at the time is always decoded: if a dropped packet lies between
    the frame found and the time (a gap between frames longer than the margin), the time is read again
    from its keyframe without dropping anything.
    """

    def __init__(self, container: Container, stream: Stream) -> None:
        self.container, self.stream = container, stream
        self.frames: Iterator[av.VideoFrame] | None = None
        self.shown: av.VideoFrame | None = None  # the last frame at or before the latest time
        self.ahead: av.VideoFrame | None = None  # the next decoded frame; None once the stream has ended
        self.key_time: float | None = None
        self.gop = 0.0  # the longest keyframe interval seen
        self.back = 0.0  # seek this far before a time: some demuxers (MPEG-TS) land after the target
        self.target = 0.0  # the time being sought
        self.dropping = True  # whether packets before target - margin may drop non-reference frames
        rate = stream.average_rate or stream.guessed_rate
        self.margin = max(SKIP_MARGIN, 3 / float(rate)) if rate else SKIP_MARGIN
        self.dropped_to = -math.inf  # the latest packet decoded with dropping on, since the last seek
        self.skip_set = False

    def frame_at(self, t: float) -> av.VideoFrame:
        self.target, self.dropping = t, True
        if self.frames is None and t <= SEEK_GAP:
            self.frames = self._decode()
            self._advance()
        elif self.frames is None or self._worth_seeking(t):
            self._seek(t)
        self._show(t)
        shown = -math.inf if self.shown is None else _seconds(self.shown, self.stream)
        if self.dropped_to > shown + TIME_SLACK:  # the frame shown at t may have been dropped: read it whole
            self.dropping = False
            self._seek(t)
            self._show(t)
        frame = self.ahead if self.shown is None else self.shown  # before the first frame: the first frame
        if frame is None:
            raise _NoFrames
        return frame

    def _show(self, t: float) -> None:
        while self.ahead is not None and _seconds(self.ahead, self.stream) <= t + TIME_SLACK:
            self.shown = self.ahead
            self._advance()

    def _decode(self) -> Iterator[av.VideoFrame]:
        """The frames from the current position on, as ``container.decode`` gives them, dropping unreferenced
        frames from packets well before the target."""
        start, base = self.stream.start_time or 0, self.stream.time_base
        context = self.stream.codec_context
        for packet in self.container.demux(self.stream):
            when = None if packet.pts is None else float((packet.pts - start) * base)
            drop = self.dropping and when is not None and when < self.target - self.margin
            if drop != self.skip_set:
                context.skip_frame = "NONREF" if drop else "DEFAULT"
                self.skip_set = drop
            if drop:
                self.dropped_to = max(self.dropped_to, when)  # type: ignore[arg-type]
            yield from packet.decode()

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
            try:
                self.container.seek(offset, stream=self.stream, backward=True, any_frame=False)
            except av.error.FFmpegError as exc:
                raise _Unseekable(str(exc)) from exc
            self.frames, self.shown, self.key_time = self._decode(), None, None
            self.dropped_to = -math.inf
            self._advance()
            if when < 0 or (self.ahead is not None and _seconds(self.ahead, self.stream) <= t + TIME_SLACK):
                break
            back = max(2 * back, 1.0)
        self.back = back

    def ended_at(self) -> float | None:
        """Time of the last frame if the stream has run out, else None."""
        return None if self.ahead is not None or self.shown is None else _seconds(self.shown, self.stream)


def seek_readers(threads: int) -> int:
    """How many readers seeking runs side by side for ``threads`` (0: one per core this process may use)."""
    from vfeval.video.pool import machine_cores  # pool imports this module's users: import at call time

    return machine_cores() if threads == 0 else max(1, threads)


def _seek_run(container: Container, stream: Stream, times: np.ndarray, convert: _Converter) -> tuple[Picked, float | None]:
    cursor = _Cursor(container, stream)
    picked: Picked = []
    for t in times:
        frame = cursor.frame_at(float(t))
        picked.append((_seconds(frame, stream), convert(frame)))
    return picked, cursor.ended_at()


def _seek_run_apart(path: str, times: np.ndarray, convert: _Converter) -> tuple[Picked, float | None]:
    """``_seek_run`` through a demuxer and decoder of its own, on one thread."""
    with _opened(path, threads=1) as (container, stream):
        return _seek_run(container, stream, times, convert)


def _pick_seeking(
    container: Container, stream: Stream, times: np.ndarray, convert: _Converter, readers: int = 1
) -> tuple[Picked, float | None]:
    """The frame shown at each of the sorted ``times``, seeking; with ``readers`` > 1 the times are cut into that
    many runs of consecutive times, the first read here and each other by a reader of its own on a thread."""
    runs = [r for r in np.array_split(times, min(readers, len(times))) if len(r)] if len(times) else [times]
    if len(runs) < 2:
        return _seek_run(container, stream, times, convert)
    stream.thread_type, stream.thread_count = "SLICE", 1  # the threads go to the readers
    with ThreadPoolExecutor(len(runs) - 1) as pool:
        others = [pool.submit(_seek_run_apart, container.name, run, convert.fresh()) for run in runs[1:]]
        parts = [_seek_run(container, stream, runs[0], convert)] + [f.result() for f in others]
    return [p for picked, _ in parts for p in picked], parts[-1][1]


def _pick_decoding_all(
    container: Container, stream: Stream, times: np.ndarray, convert: _Converter
) -> tuple[Picked, float | None]:
    picked: Picked = []
    previous, i = None, 0
    for frame in container.decode(stream):
        now = _seconds(frame, stream)
        while i < len(times) and times[i] + TIME_SLACK < now:  # times before this frame show the previous
            shown = frame if previous is None else previous
            picked.append((_seconds(shown, stream), convert(shown)))
            i += 1
        previous = frame
    if previous is None:
        raise _NoFrames
    last = (_seconds(previous, stream), convert(previous))
    return picked + [last] * (len(times) - i), last[0]


# ---------------------------------------------------------------------------------------------------
# Seek or decode everything: chosen per video from how many sampled frames each keyframe interval holds

STRATEGIES = ("auto", "seek", "decode-all")
DENSE_PER_GOP = 1.0
"""``auto`` decodes everything only when decoding from the start to the last wanted time meets at least this
many wanted frames per keyframe interval (on average), so that seeking could skip no interval, and when the
wanted frames are also too close for dropping non-reference frames to save much (``choose_strategy``)."""
_GOP_PACKETS = 1200  # packets read, without decoding, to find the first keyframe interval


def keyframe_interval(container: Container, stream: Stream) -> float:
    """Seconds between the stream's first two keyframes, from packet headers alone (nothing is decoded).

    Leaves the demuxer wherever it stopped: the caller rewinds. A stream with one keyframe in its first
    ``_GOP_PACKETS`` packets gives the time those packets span, a lower bound."""
    start, base = stream.start_time or 0, stream.time_base
    first = last = None
    for i, packet in enumerate(container.demux(stream)):
        if packet.pts is None:
            continue
        when = float((packet.pts - start) * base)
        if packet.is_keyframe:
            if first is not None and when > first:
                return when - first
            first = when if first is None else first
        last = when if last is None else max(last, when)
        if i >= _GOP_PACKETS:
            break
    return max(0.0, (last or 0.0) - (first or 0.0))


_EXACT_REWIND = frozenset({"mov", "mp4", "matroska", "webm"})
"""Demuxers (FFmpeg's names) whose seek back to the first keyframe lands exactly where a fresh open starts:
they seek by an index of the file's samples. Elsewhere (MPEG-TS, which seeks by scanning, lands on the next
keyframe) the interval is read through a second demuxer."""


def keyframe_interval_from_start(container: Container, stream: Stream) -> float:
    """``keyframe_interval`` of a container that nothing has read yet, which is left at its start again.

    Where the format rewinds exactly (``_EXACT_REWIND``) the packets are read in ``container`` and it seeks back
    to its first keyframe: about a fifth of the cost of opening the file a second time (1.1 ms against 4.9,
    best of 20, on ``bench/decode.py``'s 1-minute 480p H.264 file). Elsewhere a second demuxer reads them."""
    if _EXACT_REWIND.intersection(container.format.name.split(",")):
        gop = keyframe_interval(container, stream)
        try:
            container.seek(stream.start_time or 0, stream=stream, backward=True, any_frame=False)
        except av.error.FFmpegError as exc:  # a Matroska file cut before its index: read from a fresh open
            raise _Unseekable(str(exc)) from exc
        return gop
    with av.open(container.name) as probe:
        return keyframe_interval(probe, probe.streams.video[0])


def choose_strategy(n_times: int, last_time: float, gop: float, margin: float = SKIP_MARGIN, readers: int = 1) -> str:
    """``"decode-all"`` or ``"seek"`` for ``n_times`` wanted frames up to ``last_time`` seconds from the start.

    With several ``readers`` (``seek_readers``) it is always ``"seek"``: runs of times read side by side share
    the decoding out evenly, where FFmpeg's frame threads over one stream gained little (measured with 2
    readers against decode-all's 2 threads: 1.5x faster at 4 frames per second, 1.5x with every frame taken).
    With one reader:

    Seeking (``_Cursor``) wins twice over decoding everything: it jumps over keyframe intervals that hold no
    wanted frame, and on the way to a wanted time it drops the non-reference frames more than ``margin``
    seconds before it. Decoding everything wins only when neither saves anything: every interval holds a
    wanted frame (``DENSE_PER_GOP``), and wanted frames are at most ``2 * margin`` apart on average, so that
    nearly every frame lies within the margin of one; the seeks and the stop-and-go decoding (which with
    frame threads flushes the decoder's pipeline) are then pure cost. gop: seconds between keyframes (0 when
    unknown: every frame a keyframe, or none found, which favours seeking)."""
    if readers > 1 or gop <= 0 or n_times < 1:
        return "seek"
    intervals = math.floor(last_time / gop) + 1  # the intervals decode-all goes through
    every_interval = n_times / intervals >= DENSE_PER_GOP
    close = last_time / n_times <= 2 * margin
    return "decode-all" if every_interval and close else "seek"


def _pick_by_density(
    container: Container, stream: Stream, times: np.ndarray, convert: _Converter, readers: int = 1
) -> tuple[Picked, float | None]:
    """``_pick_decoding_all`` or ``_pick_seeking``, whichever ``choose_strategy`` picks for this video."""
    # Several readers seek whatever the density (``choose_strategy``): no interval to read then.
    gop = keyframe_interval_from_start(container, stream) if readers == 1 else 0.0
    rate = stream.average_rate or stream.guessed_rate
    margin = max(SKIP_MARGIN, 3 / float(rate)) if rate else SKIP_MARGIN  # as the cursor's
    last = float(times[-1]) if len(times) else 0.0
    if choose_strategy(len(times), last, gop, margin, readers) == "decode-all":
        return _pick_decoding_all(container, stream, times, convert)
    return _pick_seeking(container, stream, times, convert, readers)


def window_span(window: VideoWindow, duration: float) -> tuple[float, float]:
    """``[start, end)`` of the window in seconds, its end clamped to the end of the video."""
    start = 0.0 if window.start is None else float(window.start)
    end = duration if window.end is None else min(float(window.end), duration)
    if not 0 <= start < duration or end <= start:
        raise DataError(
            f"outside: window [{window.start}, {window.end}) s lies outside the video {window.path} "
            f"(0 to {duration:.3f} s)"
        )
    return start, end


def _read(
    window: VideoWindow,
    sampling: SamplingConfig,
    pick: Callable[..., tuple[Picked, float | None]],
    threads: int = 0,
) -> list[Clip]:
    """``pick(container, stream, sorted_times, convert)`` chooses the frames and says when the stream ended."""
    validate(sampling)
    with _opened(window.path, threads) as (container, stream):
        duration = _duration(container, stream, window.path)
        bounds = segment_bounds(*window_span(window, duration), sampling.segments)
        wanted = [frame_times(s, e, sampling) for s, e in bounds]
        times = np.concatenate(wanted)
        order = np.argsort(times, kind="stable")
        try:
            picked, ended_at = pick(container, stream, times[order], _Converter(sampling, stream))
        except _NoFrames:
            raise DataError(
                f"truncated: no frame of {window.path} decodes but its header says {duration:.3f} s: "
                "truncated or corrupt"
            ) from None
        rate = stream.average_rate or stream.guessed_rate
        slack = max(min(END_SLACK, END_SLACK_SHARE * duration), 2 / float(rate) if rate else 0.0)
        if ended_at is not None and times.max() - ended_at > slack:
            raise DataError(
                f"truncated: {window.path} stops at {ended_at:.3f} s but its header says {duration:.3f} s "
                f"and frames up to {times.max():.3f} s were wanted: truncated or corrupt"
            )
    results = [picked[j] for j in np.argsort(order)]  # back to the order of the segments
    clips, k = [], 0
    for (s, e), ts in zip(bounds, wanted, strict=True):
        part, k = results[k : k + len(ts)], k + len(ts)
        clips.append(Clip(np.stack([a for _, a in part]), np.array([t for t, _ in part]), s, e))
    return clips


def read_window(
    window: VideoWindow, sampling: SamplingConfig, threads: int = 0, strategy: str = "auto"
) -> list[Clip]:
    """The frames of ``window`` chosen by ``sampling``: one ``Clip`` per segment (one if ``segments`` is None).

    Each clip has ``frames: uint8 [T, H, W, 3]`` with ``T`` the number of wanted times (a frame shown at two
    wanted times appears twice) and ``times: float64 [T]``, the presentation time of each frame returned.
    ``window.end`` None, or past the end of the video, means the end of the video. Raises ``DataError`` for
    a missing, empty, corrupt or truncated file, a file without video or with a codec this FFmpeg cannot
    decode, or a window that starts outside it; ``UsageError`` for sampling settings that cannot work.
    ``strategy``: ``auto`` (seek, or decode everything when wanted frames are dense enough that seeking
    saves nothing: ``choose_strategy``), ``seek`` or ``decode-all``; all three return the same frames.
    """
    readers = seek_readers(threads)
    picks = {"auto": partial(_pick_by_density, readers=readers), "seek": partial(_pick_seeking, readers=readers),
             "decode-all": _pick_decoding_all}
    if strategy not in picks:
        raise ValueError(f"read_window: strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    try:
        return _read(window, sampling, picks[strategy], threads)
    except _Unseekable:  # the same frames, found by decoding from the start
        return _read(window, sampling, _pick_decoding_all, threads)


def read_all_frames_then_pick(window: VideoWindow, sampling: SamplingConfig, threads: int = 0) -> list[Clip]:
    """``read_window`` by decoding every frame from the start: slow, simple, the reference for tests."""
    return _read(window, sampling, _pick_decoding_all, threads)
