"""The video reader returns exactly the frame shown at each sampled time, from real encoded files.

Every test video is made with ``vfeval.testing``: frame ``i`` shows ``i`` as a grid of bits, so a test
reads back which frame it got from the pixels themselves, not from the reader's clock.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from vfeval.config import SamplingConfig
from vfeval.errors import DataError, UsageError
from vfeval.requests import VideoWindow
from vfeval.testing import index_frames, read_index, write_vfr_video, write_video
from vfeval.video import frame_times, probe, read_window, segment_bounds
from vfeval.video.reader import read_all_frames_then_pick

FPS = 8
LONG = 160  # frames: 20 s at 8 fps, a keyframe every 1.5 s
VFR_GAPS = np.random.default_rng(0).uniform(0.05, 0.75, size=60)  # 60 frames over about 24 s


def raw(mode: str = "uniform", **kwargs: object) -> SamplingConfig:
    """Sampling that keeps the decoded size, so the index code can be read back."""
    return SamplingConfig(mode=mode, size=0, crop=0, **kwargs)


def shown_at(times: np.ndarray, pts: np.ndarray) -> list[int]:
    """Index of the frame on screen at each time: the last with pts <= t, else the first."""
    return [max(0, int(np.searchsorted(pts, t + 1e-6, side="right")) - 1) for t in times]


def indices(clip_frames: np.ndarray) -> list[int]:
    return [read_index(frame) for frame in clip_frames]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    long = index_frames(LONG)
    return {
        "mp4": write_video(root / "long.mp4", long, fps=FPS),
        "mkv": write_video(root / "long.mkv", long, fps=FPS),
        "ts": write_video(root / "long.ts", long, fps=FPS),  # MPEG-TS: starts at a non-zero timestamp
        "wide": write_video(root / "wide.mp4", index_frames(16, 48, 64), fps=FPS),
        "longgop": write_video(root / "longgop.mp4", long, fps=FPS, gop=80),  # a keyframe every 10 s
        "vfr": write_vfr_video(root / "vfr.mkv", index_frames(60), np.round(np.cumsum(VFR_GAPS), 3)),
    }


def window(path: Path, start: float | None = None, end: float | None = None) -> VideoWindow:
    return VideoWindow(path.stem, str(path), start, end)


# --- times: pure functions ---------------------------------------------------------------------------


def test_uniform_times_are_span_centres() -> None:
    np.testing.assert_allclose(frame_times(2.0, 6.0, raw(num_frames=4)), [2.5, 3.5, 4.5, 5.5])


def test_fps_times_start_at_window_start_stop_before_end_and_cap() -> None:
    np.testing.assert_allclose(frame_times(1.0, 1.3, raw("fps", fps=10)), [1.0, 1.1, 1.2])  # not 1.3
    np.testing.assert_allclose(frame_times(0.0, 0.25, raw("fps", fps=10)), [0.0, 0.1, 0.2])
    assert len(frame_times(0.0, 100.0, raw("fps", fps=2, max_frames=7))) == 7
    with pytest.raises(UsageError):
        frame_times(0.0, 1.0, raw("every"))


def test_segment_bounds_cut_consecutive_spans_and_drop_a_final_sliver() -> None:
    assert segment_bounds(0.0, 20.0, None) == [(0.0, 20.0)]
    assert segment_bounds(0.0, 20.0, 6.0) == [(0.0, 6.0), (6.0, 12.0), (12.0, 18.0), (18.0, 20.0)]
    assert segment_bounds(0.0, 20.0, 6.5) == [(0.0, 6.5), (6.5, 13.0), (13.0, 19.5)]  # 0.5 s sliver
    assert segment_bounds(0.0, 1.0, 6.0) == [(0.0, 1.0)]  # a lone short segment is kept
    assert len(segment_bounds(0.0, 3.0, 1.0)) == 3  # 3.0 / 1.0 leaves no rounding sliver
    with pytest.raises(UsageError):
        segment_bounds(0.0, 1.0, 0.0)


# --- frame exactness ----------------------------------------------------------------------------------


def test_index_code_survives_h264_and_mpeg4(tmp_path: Path) -> None:
    frames = index_frames(40, 48, 64)
    for codec in ("libx264", "mpeg4"):
        path = write_video(tmp_path / f"{codec}.mp4", frames, codec=codec)
        with av.open(str(path)) as container:
            got = [read_index(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
        assert got == list(range(40))


@pytest.mark.parametrize("kind", ["mp4", "mkv", "ts"])
def test_uniform_sampling_returns_the_frame_shown_at_each_centre(videos: dict[str, Path], kind: str) -> None:
    (clip,) = read_window(window(videos[kind]), raw(num_frames=8))
    assert indices(clip.frames) == [10, 30, 50, 70, 90, 110, 130, 150]
    np.testing.assert_allclose(clip.times, np.array([10, 30, 50, 70, 90, 110, 130, 150]) / FPS)
    assert (clip.start, clip.end) == (0.0, 20.0)


def test_fps_sampling_returns_frames_at_each_step(videos: dict[str, Path]) -> None:
    (clip,) = read_window(window(videos["mp4"]), raw("fps", fps=3))
    times = np.arange(60) / 3  # every i/3 s before 20 s
    assert indices(clip.frames) == shown_at(times, np.arange(LONG) / FPS)
    (capped,) = read_window(window(videos["mp4"]), raw("fps", fps=3, max_frames=5))
    assert indices(capped.frames) == [0, 2, 5, 8, 10]


def test_window_inside_a_long_video(videos: dict[str, Path]) -> None:
    (clip,) = read_window(window(videos["mp4"], 5.3, 12.1), raw(num_frames=6))
    assert indices(clip.frames) == shown_at(5.3 + (np.arange(6) + 0.5) * 6.8 / 6, np.arange(LONG) / FPS)
    assert (clip.start, clip.end) == (5.3, 12.1)
    (clip,) = read_window(window(videos["mp4"], 7.0, 9.0), raw("fps", fps=4))
    assert indices(clip.frames) == [56, 58, 60, 62, 64, 66, 68, 70]


def test_segments_are_sampled_each_on_its_own(videos: dict[str, Path]) -> None:
    clips = read_window(window(videos["mp4"], 1.0, 15.0), raw(num_frames=2, segments=6.0))
    assert [(c.start, c.end) for c in clips] == [(1.0, 7.0), (7.0, 13.0), (13.0, 15.0)]
    assert [indices(c.frames) for c in clips] == [[20, 44], [68, 92], [108, 116]]


def test_variable_frame_rate_uses_presentation_timestamps(tmp_path: Path) -> None:
    gaps = np.random.default_rng(0).uniform(0.02, 0.6, size=29)
    pts = np.round(np.concatenate([[0.0], np.cumsum(gaps)]), 3)
    path = write_vfr_video(tmp_path / "vfr.mp4", index_frames(30), pts)
    duration = probe(path).duration  # from the container's header, which need not end at the last pts
    for sampling in (raw(num_frames=12), raw("fps", fps=5)):
        (clip,) = read_window(window(path), sampling)
        wanted = frame_times(0.0, duration, sampling)
        assert indices(clip.frames) == shown_at(wanted, pts)
        np.testing.assert_allclose(clip.times, pts[shown_at(wanted, pts)], atol=1e-3)


def test_times_count_from_the_first_frame_when_the_stream_starts_late(tmp_path: Path) -> None:
    pts = 3.0 + np.arange(24) / 8  # the stream's first timestamp is 3 s
    path = write_vfr_video(tmp_path / "late.mp4", index_frames(24), pts)
    (clip,) = read_window(window(path, 0.5, 1.0), raw(num_frames=2))
    assert indices(clip.frames) == [5, 7]  # shown at 0.625 s and 0.875 s
    np.testing.assert_allclose(clip.times, [5 / 8, 7 / 8], atol=1e-3)


def test_a_frame_shown_at_two_times_is_repeated(tmp_path: Path) -> None:
    path = write_video(tmp_path / "short.mp4", index_frames(4), fps=2)  # 2 s, 4 frames
    (clip,) = read_window(window(path), raw(num_frames=8))
    assert clip.frames.shape[0] == 8
    assert indices(clip.frames) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_last_frame_is_shown_until_the_end_of_the_video(tmp_path: Path) -> None:
    path = write_video(
        tmp_path / "end.mp4", index_frames(20), fps=FPS
    )  # frame 19 shows from 2.375 s to 2.5 s
    (clip,) = read_window(window(path, 2.0, 100.0), raw("fps", fps=40))  # the end is clamped to 2.5 s
    assert clip.end == 2.5 and len(clip.frames) == 20
    assert indices(clip.frames) == shown_at(2.0 + np.arange(20) / 40, np.arange(20) / FPS)
    assert indices(clip.frames)[-5:] == [19] * 5  # 2.375 s to 2.475 s: past the last timestamp


@pytest.mark.parametrize("kind", ["mp4", "mkv", "ts", "longgop", "vfr"])
def test_seeking_returns_the_same_frames_as_decoding_everything(videos: dict[str, Path], kind: str) -> None:
    # Random windows, plus the whole video sampled densely (where ``auto`` decodes everything from the start).
    rng = np.random.default_rng(1)
    samplings = [raw(num_frames=5), raw("fps", fps=0.4), raw("fps", fps=3), raw(num_frames=3, segments=4.0)]
    spans: list[tuple[float | None, float | None]] = [(None, None)]
    for _ in range(4):
        start = float(rng.uniform(0, 12))
        spans.append((start, float(start + rng.uniform(0.5, 8))))
    for start, end in spans:
        for sampling in samplings + [raw("fps", fps=FPS / 2, max_frames=400)] * (start is None):
            naive = read_all_frames_then_pick(window(videos[kind], start, end), sampling)
            # One thread: ``auto`` chooses per video, and decoding everything starts where its probe rewound to.
            for strategy, threads in (("seek", 0), ("auto", 0), ("auto", 1)):
                picked = read_window(window(videos[kind], start, end), sampling, threads=threads, strategy=strategy)
                for a, b in zip(picked, naive, strict=True):
                    assert np.array_equal(a.times, b.times), (strategy, threads, start, end, sampling)
                    assert np.array_equal(a.frames, b.frames), (strategy, threads, start, end, sampling)


# --- output size, rotation ----------------------------------------------------------------------------


def test_resize_short_side_then_centre_crop(videos: dict[str, Path]) -> None:
    wide = window(videos["wide"])  # 48 x 64
    sampling = SamplingConfig(num_frames=3, size=24, crop=0)
    (clip,) = read_window(wide, sampling)
    assert clip.frames.shape == (3, 24, 32, 3) and clip.frames.dtype == np.uint8
    assert indices(clip.frames) == [2, 8, 13]  # the code survives downscaling
    (clip,) = read_window(wide, SamplingConfig(num_frames=3, size=24, crop=16))
    assert clip.frames.shape == (3, 16, 16, 3) and clip.frames.flags.c_contiguous
    (clip,) = read_window(wide, raw(num_frames=3))
    assert clip.frames.shape == (3, 48, 64, 3)
    with pytest.raises(DataError, match="smaller than"):
        read_window(wide, SamplingConfig(num_frames=3, size=0, crop=100))
    with pytest.raises(UsageError, match="crop"):
        read_window(wide, SamplingConfig(num_frames=3, size=24, crop=32))


def test_rotated_video_is_returned_upright(tmp_path: Path) -> None:
    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip("this PyAV cannot write a display matrix")
    path = write_video(tmp_path / "phone.mp4", index_frames(8, 32, 64), rotation=90)  # stored 32 x 64
    (clip,) = read_window(window(path), raw(num_frames=4))
    assert clip.frames.shape == (4, 64, 32, 3)  # shown a quarter turn counter-clockwise
    assert [read_index(np.rot90(f, -1)) for f in clip.frames] == [1, 3, 5, 7]


# --- probe and errors ---------------------------------------------------------------------------------


def test_probe(videos: dict[str, Path]) -> None:
    info = probe(videos["mp4"])
    assert (info.duration, info.fps, info.width, info.height) == (20.0, 8.0, 32, 32)
    assert info.num_frames == LONG and info.codec == "h264"
    assert probe(videos["ts"]).duration == pytest.approx(20.0, abs=0.2)


def test_unusable_files_raise_data_error_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    with av.open(str(tmp_path / "sound.wav"), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    cases = {"missing.mp4": "not found", "empty.mp4": "empty", "junk.mp4": "corrupt", "sound.wav": "no video"}
    for name, reason in cases.items():
        with pytest.raises(DataError, match=reason):
            read_window(window(tmp_path / name), raw(num_frames=2))
        with pytest.raises(DataError, match=reason):
            probe(tmp_path / name)


def test_window_outside_the_video_raises_data_error(videos: dict[str, Path]) -> None:
    for start, end in [(25.0, None), (20.0, 30.0), (-1.0, 2.0), (5.0, 5.0)]:
        with pytest.raises(DataError, match="outside the video"):
            read_window(window(videos["mp4"], start, end), raw(num_frames=2))


def test_truncated_files(videos: dict[str, Path], tmp_path: Path) -> None:
    """Cut in half: an MP4 loses its index (DataError); an MKV keeps promising 20 s, so wanting frames from
    the lost half is a DataError while the half that exists reads normally; an MPEG-TS simply ends sooner."""
    halves = {}
    for kind in ("mp4", "mkv", "ts"):
        data = videos[kind].read_bytes()
        halves[kind] = tmp_path / f"half.{kind}"
        halves[kind].write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt"):
        read_window(window(halves["mp4"]), raw(num_frames=4))
    with pytest.raises(DataError, match="truncated"):
        read_window(window(halves["mkv"]), raw(num_frames=4))
    (clip,) = read_window(window(halves["mkv"], 0.0, 4.0), raw(num_frames=4))
    assert indices(clip.frames) == [4, 12, 20, 28]
    (clip,) = read_window(window(halves["ts"]), raw(num_frames=4))
    assert indices(clip.frames) == shown_at(clip.times, np.arange(LONG) / FPS)
    assert clip.end < 15


def test_importing_the_reader_does_not_import_torch() -> None:
    code = "import sys, vfeval.video; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- dropped frames, threads, failure reasons ---------------------------------------------------------


def test_a_frame_held_for_long_is_found_even_where_the_decoder_drops_unreferenced_frames(tmp_path: Path) -> None:
    """Frames well before a wanted time may be dropped (``skip_frame=NONREF``); a frame still on screen at
    that time, two seconds after its timestamp, must not be one of them."""
    gaps = np.where(np.random.default_rng(3).random(199) < 0.05, 2.0, 1 / 30)
    pts = np.round(np.concatenate([[0.0], np.cumsum(gaps)]), 3)
    path = write_vfr_video(tmp_path / "holds.mkv", index_frames(200), pts, gop=30)
    held = [i for i in range(199) if gaps[i] == 2.0]
    assert held
    for i in held:
        (clip,) = read_window(window(path, pts[i] + 0.6, pts[i] + 1.9), raw(num_frames=2))
        assert indices(clip.frames) == [i, i]
    for sampling in (raw("fps", fps=4, max_frames=1000), raw(num_frames=20)):
        (clip,) = read_window(window(path), sampling)
        wanted = frame_times(0.0, probe(path).duration, sampling)
        assert indices(clip.frames) == shown_at(wanted, pts)


def test_decoding_threads_do_not_change_the_frames(videos: dict[str, Path]) -> None:
    for kind in ("mp4", "vfr"):
        for sampling in (raw(num_frames=9), raw("fps", fps=2)):
            one = read_window(window(videos[kind], 1.0, 15.0), sampling, threads=1)
            auto = read_window(window(videos[kind], 1.0, 15.0), sampling, threads=0)
            two = read_all_frames_then_pick(window(videos[kind], 1.0, 15.0), sampling, threads=2)
            for a, b, c in zip(one, auto, two, strict=True):
                assert np.array_equal(a.frames, b.frames) and np.array_equal(a.frames, c.frames)


def test_every_failure_reason_starts_with_a_short_slug(videos: dict[str, Path], tmp_path: Path) -> None:
    """Runs count failed samples by the text before the first colon, so each reason has a stable slug."""
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    data = videos["mkv"].read_bytes()
    (tmp_path / "half.mkv").write_bytes(data[: len(data) // 2])
    assert b"V_MPEG4/ISO/AVC" in data  # the Matroska codec id, renamed to one no FFmpeg knows
    (tmp_path / "alien.mkv").write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_XXXXX/ISO/ZZZ"))
    cases = {
        window(tmp_path / "missing.mp4"): "missing",
        window(tmp_path): "missing",  # a folder
        window(tmp_path / "empty.mp4"): "empty",
        window(tmp_path / "junk.mp4"): "corrupt",
        window(tmp_path / "half.mkv"): "truncated",
        window(tmp_path / "alien.mkv"): "unsupported-codec",
        window(videos["mp4"], 30.0, 40.0): "outside",
    }
    for win, slug in cases.items():
        for read in (read_window, read_all_frames_then_pick):
            with pytest.raises(DataError, match=f"^{slug}: "):
                read(win, raw(num_frames=4))
