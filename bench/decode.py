"""Decoding speed: seeking to the sampled times (``pyav``) against decoding every frame (``pyav-decode-all``).

    python bench/decode.py [--dir DIR] [--repeat 3] [--threads 1 0]

Generates H.264 videos once into DIR (default: $VFEVAL_BENCH_DIR or <tmp>/vfeval-bench), a minute or so on
two cores: 3 minutes at 30 fps with a 256-pixel short side (EgoSchema's length) and 1 minute at 30 fps with
a 480-pixel short side, x264 ``veryfast`` with its default keyframe interval (250 frames, 8.3 s). Each
picture is a textured background that pans, with a moving square, so the encoder has motion to code.

For each video it reads 16 uniform frames and 1 frame per second (180 and 60 frames), resized and cropped
to 224 as the default sampling does, with each backend, checks that both return the same frames, and prints
the best of ``--repeat`` wall times. ``--threads``: FFmpeg decoding threads per reader (1 is what a worker
of a process pool uses when there are as many workers as cores; 0 lets FFmpeg use every core).
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
from vfeval.video.backends import get_decoder

VIDEOS = {  # name: (seconds, short side)
    "3min-256p": (180, 256),
    "1min-480p": (60, 480),
}
FPS = 30


def bench_dir() -> Path:
    return Path(os.environ.get("VFEVAL_BENCH_DIR") or Path(tempfile.gettempdir()) / "vfeval-bench")


def generate(path: Path, seconds: int, short: int, fps: int = FPS) -> Path:
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
        stream = container.add_stream("libx264", rate=Fraction(fps), options={"preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.thread_type = "AUTO"
        side = short // 4
        for i in range(seconds * fps):
            dy, dx = (i // 2) % (64 * block // 2), i % (64 * block)
            frame = texture[dy : dy + height, dx : dx + width].copy()
            y = int((height - side) * (0.5 + 0.5 * np.sin(i / 40)))
            x = int((width - side) * (0.5 + 0.5 * np.cos(i / 57)))
            frame[y : y + side, x : x + side] = (230, 40, 40)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    tmp.rename(path)
    return path


def timed(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=bench_dir())
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0])
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)

    paths = {}
    for name, (seconds, short) in VIDEOS.items():
        t0 = time.perf_counter()
        paths[name] = generate(args.dir / f"{name}.mp4", seconds, short)
        spent = time.perf_counter() - t0
        if spent > 1:
            print(f"generated {paths[name]} in {spent:.1f} s")
    samplings = {
        "uniform 16": SamplingConfig(mode="uniform", num_frames=16),
        "1 fps": SamplingConfig(mode="fps", fps=1.0, max_frames=1000),
    }
    print(f"PyAV {av.__version__}, FFmpeg {getattr(av, 'ffmpeg_version_info', '?')}, {os.cpu_count()} cores, "
          f"best of {args.repeat}; output frames 224x224")
    header = f"{'video':<11} {'sampling':<11} {'frames':>6} {'threads':>7} {'decode-all s':>12} {'seek s':>8} " \
             f"{'speed-up':>8}"
    print(header)
    print("-" * len(header))
    for name, path in paths.items():
        window = VideoWindow(name, str(path))
        for label, sampling in samplings.items():
            for threads in args.threads:
                seek, clips = timed(lambda: get_decoder("pyav", threads).read_window(window, sampling), args.repeat)
                full, reference = timed(
                    lambda: get_decoder("pyav-decode-all", threads).read_window(window, sampling), args.repeat
                )
                same = all(np.array_equal(a.frames, b.frames) for a, b in zip(clips, reference, strict=True))
                frames = sum(len(c.times) for c in clips)
                print(f"{name:<11} {label:<11} {frames:>6} {threads or 'auto':>7} {full:>12.3f} {seek:>8.3f} "
                      f"{full / seek:>7.1f}x{'' if same else '  (frames differ!)'}")


if __name__ == "__main__":
    main()
