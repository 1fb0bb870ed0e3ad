"""The ``torchcodec`` decoder: FFmpeg through TorchCodec, registered by the core where TorchCodec is installed
(``pip install "vfeval[torchcodec]"``; its version must match the installed torch, and it needs FFmpeg's
shared libraries, 4 to 8).

It answers the same question as the PyAV reader, by TorchCodec's own rule: the frame *played at* a time is
the one whose ``[pts, pts + duration)`` holds it (``VideoDecoder.get_frames_played_at``), which is
``vfeval.video.sampling``'s frame at time t. So that both decoders sample the same times, the window's
length comes from the same header read as the PyAV reader's (``vfeval.video.reader.probe``); only the frames
are decoded by TorchCodec. Times are measured from the stream's start, as the reader's are; a time before
the first frame gives the first frame, a time past the last gives the last.

``VideoDecoder`` seeks to the keyframe before each time, and where FFmpeg lands past it (files without a
seek index, MPEG-TS above all: up to a group of pictures late, even for the first frame) it returns the next
frame it decodes instead of refusing, or fails having reached the end. So every frame is checked: if one
starts after the time it was asked for, or the batched call fails, the window is read again by demuxing
forward with TorchCodec's own blocks (``Demuxer``, its packet decoder and ``ColorConverter``), backing off
from the first time until the landing is no later than it; a TorchCodec without those blocks raises
``DataError("decode-error: ...")`` instead of returning the wrong frames.

TorchCodec converts to RGB at the decoded size (and turns rotated streams upright itself); resizing and
cropping follow the reader (swscale's area filter, short side to ``size``, centre crop to ``crop``). Importing
this module imports torch: only a decoding process does, when it builds the decoder.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from vfeval.errors import DataError, UsageError
from vfeval.requests import VideoWindow
from vfeval.video.reader import END_SLACK, END_SLACK_SHARE, TIME_SLACK, probe, window_span
from vfeval.video.sampling import frame_times, segment_bounds, validate
from vfeval.video.types import Clip, VideoInfo


def _resize_crop(frames: np.ndarray, size: int, crop: int) -> np.ndarray:
    """``uint8 [T, H, W, 3]`` with the short side scaled to ``size`` (0 keeps it) and centre-cropped to
    ``crop`` (0 for none), as the PyAV reader does."""
    if size:
        import av

        h, w = frames.shape[1:3]
        scale = size / min(w, h)
        width, height = max(1, round(w * scale)), max(1, round(h * scale))
        frames = np.stack([
            av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            .reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_ndarray()
            for f in frames
        ])
    if crop:
        h, w = frames.shape[1:3]
        if crop > min(h, w):
            raise DataError(f"too-small: frames are {h}x{w}, smaller than the {crop}x{crop} crop")
        top, left = (h - crop) // 2, (w - crop) // 2
        frames = frames[:, top : top + crop, left : left + crop]
    return np.ascontiguousarray(frames)


def _played_at_by_demuxing(
    path: str, query: np.ndarray, first: float, threads: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 [N, H, W, 3], float64 [N] pts in seconds)``: the frame played at each of the increasing ``query``
    times, decoded forward through TorchCodec's blocks after a seek that is checked (``VideoDecoder`` trusts
    FFmpeg's landing; see the module docstring). Raises ``ImportError`` where TorchCodec has no blocks."""
    from torchcodec.decoders import ColorConverter, Demuxer

    convert = ColorConverter(device="cpu")
    back = 1.0
    while True:
        demuxer = Demuxer(path)
        decoder = demuxer.streams[0].make_decoder(device="cpu", num_ffmpeg_threads=threads)
        at = float(query[0]) - back
        if at > first:  # otherwise read from the start, where no seek can land late
            demuxer.seek(at)
        raw = _raw_frames(demuxer, decoder)
        head = next(raw, None)
        if at <= first or (head is not None and head.pts_seconds <= query[0] + TIME_SLACK):
            break
        back *= 2  # landed past the first time (or at the end): seek from further back
    if head is None:
        raise DataError(f"truncated: no frame of {path} decodes")
    frames, shown, i, shown_frame, prev = [], [], 0, None, head
    for frame in raw:  # the frame played at q is the last one that starts at or before it
        while i < len(query) and frame.pts_seconds > query[i] + TIME_SLACK:
            if shown_frame is None or shown_frame[0] is not prev:
                shown_frame = (prev, convert.convert(prev).data.permute(1, 2, 0).numpy())
            frames.append(shown_frame[1])
            shown.append(prev.pts_seconds)
            i += 1
        if i == len(query):
            break
        prev = frame
    while i < len(query):  # times past the last frame get the last frame
        if shown_frame is None or shown_frame[0] is not prev:
            shown_frame = (prev, convert.convert(prev).data.permute(1, 2, 0).numpy())
        frames.append(shown_frame[1])
        shown.append(prev.pts_seconds)
        i += 1
    return np.stack(frames), np.array(shown, dtype=np.float64)


def _raw_frames(demuxer: Any, decoder: Any) -> Any:
    """The decoded frames of the demuxer's video stream, in presentation order, to the end of the stream."""
    for packet in demuxer:
        yield from decoder.decode(packet)
    yield from decoder.drain()


class TorchCodecBackend:
    """FFmpeg through TorchCodec: one ``VideoDecoder`` per window, all wanted times in one batched call."""

    name = "torchcodec"

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads
        try:
            import torchcodec  # noqa: F401
            from torchcodec.decoders import VideoDecoder
        except Exception as exc:  # a broken install: a wrong torch, or no FFmpeg libraries
            raise UsageError(
                f"TorchCodec is installed but cannot load ({type(exc).__name__}: {exc}); install a torchcodec "
                "build that matches your torch, and FFmpeg's shared libraries, or use decoder=pyav"
            ) from None
        self._decoder_type = VideoDecoder

    def version(self) -> dict[str, str]:
        import av
        import torch
        import torchcodec
        from torchcodec._core import get_ffmpeg_library_versions

        ffmpeg = {f"torchcodec-{k}": str(v) for k, v in sorted(get_ffmpeg_library_versions().items())}
        # PyAV reads the header that fixes the sampled times.
        return {"torchcodec": torchcodec.__version__, "torch": torch.__version__, **ffmpeg, "pyav": av.__version__}

    def probe(self, path: str | os.PathLike) -> VideoInfo:
        return probe(path)

    def read_window(self, window: VideoWindow, sampling: Any) -> list[Clip]:
        """One clip per segment of ``window``, as ``vfeval.video.read_window`` specifies."""
        validate(sampling)
        info = probe(window.path)  # missing, empty, corrupt or video-less files fail here, as with PyAV
        bounds = segment_bounds(*window_span(window, info.duration), sampling.segments)
        wanted = [frame_times(s, e, sampling) for s, e in bounds]
        times = np.concatenate(wanted)
        try:
            decoder = self._decoder_type(window.path, dimension_order="NHWC", num_ffmpeg_threads=self.threads,
                                         seek_mode="exact")
        except Exception as exc:
            raise DataError(f"corrupt: TorchCodec cannot open {window.path} ({type(exc).__name__}: {exc})") from None
        meta = decoder.metadata
        start = meta.begin_stream_seconds_from_header
        start = float(meta.begin_stream_seconds if start is None else start)
        first, end = float(meta.begin_stream_seconds), float(meta.end_stream_seconds)
        # The frame shown at t (with the reader's microsecond of slack), kept inside the decodable range.
        query = np.clip(start + times + TIME_SLACK, first, math.nextafter(end, -math.inf))
        try:
            batch = decoder.get_frames_played_at(query.tolist())
            frames, shown = batch.data.numpy(), batch.pts_seconds.numpy().astype(np.float64)
            failure = None
        except Exception as exc:  # a seek that landed past the last frame ends here too
            frames, shown, failure = None, query, f"{type(exc).__name__}: {exc}"
        late = np.flatnonzero(shown > query + TIME_SLACK)  # FFmpeg's seek landed past a wanted frame
        if failure is not None or len(late):
            try:
                frames, shown = _played_at_by_demuxing(str(window.path), query, first, self.threads)
            except ImportError:
                if failure is not None:
                    raise DataError(f"decode-error: TorchCodec on {window.path}: {failure}") from None
                raise DataError(
                    f"decode-error: TorchCodec gave the frame at {shown[late[0]] - start:.3f} s for "
                    f"{times[late[0]]:.3f} s of {window.path}: its seek landed past the keyframe (a file without "
                    "a seek index, such as MPEG-TS); use a TorchCodec with Demuxer, or decoder=pyav"
                ) from None
            except DataError:
                raise
            except Exception as exc:
                raise DataError(f"decode-error: TorchCodec on {window.path}: {type(exc).__name__}: {exc}") from None
        shown = shown - start
        slack = max(min(END_SLACK, END_SLACK_SHARE * info.duration), 2 / info.fps if info.fps else 0.0)
        if len(times) and times.max() - shown.max() > slack:
            raise DataError(
                f"truncated: {window.path} stops at {shown.max():.3f} s but its header says {info.duration:.3f} s "
                f"and frames up to {times.max():.3f} s were wanted: truncated or corrupt"
            )
        frames = _resize_crop(frames, sampling.size, sampling.crop)
        clips, k = [], 0
        for (s, e), ts in zip(bounds, wanted, strict=True):
            clips.append(Clip(frames[k : k + len(ts)], shown[k : k + len(ts)], s, e))
            k += len(ts)
        return clips
