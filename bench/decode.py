"""Decoding speed: seeking to the sampled times (``pyav``) against decoding every frame (``pyav-decode-all``).

    python bench/decode.py [--dir DIR] [--repeat 3] [--threads 1 0]

Generates H.264 videos once into DIR (default: $VFEVAL_BENCH_DIR or <tmp>/vfeval-bench), about a minute on
two cores: 3 minutes at 30 fps with a 256-pixel short side (EgoSchema's length) and 1 minute at 30 fps with
a 480-pixel short side, x264 ``veryfast`` (B-frames), each with two keyframe intervals: x264's default of 250
frames (8.3 s; what ``ffmpeg -c:v libx264`` writes) and 60 frames (2 s; phones and streaming services). Each
picture is a textured background that pans, with a moving square, so the encoder has motion to code.

For each video it reads 16 uniform frames and 1 frame per second (180 and 60 frames), resized and cropped
to 224 as the default sampling does, with each backend, checks that both return the same frames, and prints
the best of ``--repeat`` wall times and the CPU time of that run. ``--threads``: FFmpeg decoding threads
per reader (1, the default, is what each worker of a process pool uses when there are as many workers as
cores; 0 lets FFmpeg use every core).

Seeking cannot skip the frames between a keyframe and a wanted time, so its gain is bounded by the
keyframe interval: with 8.3 s between keyframes, 16 frames of a 3-minute video still need about a third of
its frames decoded (fewer with the non-reference frames dropped).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vfeval.config import SamplingConfig
from vfeval.requests import VideoWindow
from vfeval.video import Clip, VideoBackend
from vfeval.video.backends import get_decoder

VIDEOS = {  # name: (seconds, short side, keyframe interval in frames)
    "3min-256p-k250": (180, 256, 250),
    "3min-256p-k60": (180, 256, 60),
    "1min-480p-k250": (60, 480, 250),
    "1min-480p-k60": (60, 480, 60),
}
FPS = 30


def bench_dir() -> Path:
    return Path(os.environ.get("VFEVAL_BENCH_DIR") or Path(tempfile.gettempdir()) / "vfeval-bench")


def generate(
    path: Path, seconds: float, short: int, keyint: int, fps: int = FPS, square: tuple[int, int, int] = (230, 40, 40)
) -> Path:
    """A 16:9 H.264 video, written frame by frame (never all in memory); skipped if it exists."""
    if path.exists():
        return path
    height, width = short, 2 * round(short * 16 / 9 / 2)
    rng = np.random.default_rng(0)
    block = 8
    texture = rng.integers(40, 200, size=(height // block + 64, width // block + 64, 3), dtype=np.uint8)
    texture = texture.repeat(block, axis=0).repeat(block, axis=1)
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), mode="w") as container:
        options = {"preset": "veryfast", "g": str(keyint)}
        stream = container.add_stream("libx264", rate=Fraction(fps), options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.thread_type = "AUTO"
        side = short // 4
        for i in range(round(seconds * fps)):
            dy, dx = (i // 2) % (64 * block // 2), i % (64 * block)
            frame = texture[dy : dy + height, dx : dx + width].copy()
            y = int((height - side) * (0.5 + 0.5 * np.sin(i / 40)))
            x = int((width - side) * (0.5 + 0.5 * np.cos(i / 57)))
            frame[y : y + side, x : x + side] = square
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    tmp.rename(path)
    return path


def timed(
    backend: VideoBackend, window: VideoWindow, sampling: SamplingConfig, repeat: int
) -> tuple[float, float, list[Clip]]:
    """(best wall seconds, CPU seconds of that run, the clips)."""
    best, cpu, out = float("inf"), 0.0, []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = backend.read_window(window, sampling)
        wall = time.perf_counter() - t0
        if wall < best:
            best, cpu = wall, time.process_time() - c0
    return best, cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=bench_dir())
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)

    paths = {}
    for name, (seconds, short, keyint) in VIDEOS.items():
        t0 = time.perf_counter()
        paths[name] = generate(args.dir / f"{name}.mp4", seconds, short, keyint)
        spent = time.perf_counter() - t0
        if spent > 1:
            print(f"generated {paths[name]} in {spent:.1f} s")
    samplings = {
        "uniform 16": SamplingConfig(mode="uniform", num_frames=16),
        "1 fps": SamplingConfig(mode="fps", fps=1.0, max_frames=1000),
    }
    print(f"PyAV {av.__version__}, FFmpeg {getattr(av, 'ffmpeg_version_info', '?')}, {os.cpu_count()} cores, "
          f"best of {args.repeat}; output frames 224x224")
    header = (f"{'video':<15} {'sampling':<10} {'frames':>6} {'threads':>7} {'decode-all s':>12} {'(cpu)':>6} "
              f"{'seek s':>7} {'(cpu)':>6} {'speed-up':>8}")
    print(header)
    print("-" * len(header))
    for name, path in paths.items():
        window = VideoWindow(name, str(path))
        for label, sampling in samplings.items():
            for threads in args.threads:
                seek, seek_cpu, clips = timed(get_decoder("pyav", threads), window, sampling, args.repeat)
                full, full_cpu, reference = timed(
                    get_decoder("pyav-decode-all", threads), window, sampling, args.repeat
                )
                same = all(np.array_equal(a.frames, b.frames) for a, b in zip(clips, reference, strict=True))
                frames = sum(len(c.times) for c in clips)
                print(f"{name:<15} {label:<10} {frames:>6} {threads or 'auto':>7} {full:>12.3f} {full_cpu:>6.2f} "
                      f"{seek:>7.3f} {seek_cpu:>6.2f} {full / seek:>7.1f}x{'' if same else '  (frames differ!)'}")


if __name__ == "__main__":
    main()
