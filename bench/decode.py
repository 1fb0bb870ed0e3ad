"""Decoding speed: seeking to the sampled times (``pyav``) against decoding every frame (``pyav-decode-all``).

    python bench/decode.py [--dir DIR] [--repeat 3] [--threads 1 0] [--quick]

Generates H.264 videos once into DIR (default: $VFEVAL_BENCH_DIR or <tmp>/vfeval-bench), about a minute on
two cores: 3 minutes at 30 fps with a 256-pixel short side (EgoSchema's length) and 1 minute at 30 fps with
a 480-pixel short side, x264 ``veryfast`` (B-frames), each with two keyframe intervals: x264's default of 250
frames (8.3 s; what ``ffmpeg -c:v libx264`` writes) and 60 frames (2 s; phones and streaming services). Each
picture is a textured background that pans, with a moving square, so the encoder has motion to code.

For each video it reads 16 uniform frames (sparse: most keyframe intervals hold none), and 1 and 4 frames
per second (dense: every interval holds some), resized and cropped to 224 as the default sampling does, in
three ways: ``read_window``'s ``seek``, ``decode-all``, and ``auto`` (``choose_strategy``: with one thread,
one of the two per video from the wanted frames per keyframe interval; with several, seeking). When ``auto``
decodes everything it runs decode-all's code after reading the keyframe interval from packet headers in the
same container and rewinding it (a second demuxer for MPEG-TS), so it is slower only by that probe, which is
timed in the same rounds, in a container opened as every strategy opens it, and reported as a share of
decode-all (target at most 1%); the ratio of the two whole reads is reported too, but its spread is the
machine's noise. It checks that all three return the same frames, and prints the best of ``--repeat``
interleaved rounds and the speed-ups over decode-all, each with the spread of its per-round ratios.
``--threads``: threads per read (1 is what each worker of a process pool uses when there are as many workers
as cores; 0 uses every core: decode-all gives them to FFmpeg, seeking to readers of runs of the wanted times,
side by side).

Seeking cannot skip the frames between a keyframe and a wanted time, so on one thread its gain is bounded by
the keyframe interval: with 8.3 s between keyframes, 16 frames of a 3-minute video still need about a third of
its frames decoded (fewer with the non-reference frames dropped). When every interval holds a wanted frame
one reader seeking saves nothing and pays for its seeks, so ``auto`` on one thread decodes everything; several
readers share the video out between them and beat FFmpeg's frame threads over the whole of it.
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
from harness import interleaved, ratio, write_json

from vfeval.config import SamplingConfig
from vfeval.requests import VideoWindow
from vfeval.video.reader import choose_strategy, keyframe_interval_from_start, read_window, seek_readers

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=bench_dir())
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds, after one warm-up round")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0])
    parser.add_argument("--quick", action="store_true", help="one 30-second video: a check that it runs")
    parser.add_argument("--json", help="also write the figures to this JSON file (for bench/run_all.py)")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)

    videos = {"30s-256p-k60": (30, 256, 60)} if args.quick else VIDEOS
    paths = {}
    for name, (seconds, short, keyint) in videos.items():
        t0 = time.perf_counter()
        paths[name] = generate(args.dir / f"{name}.mp4", seconds, short, keyint)
        spent = time.perf_counter() - t0
        if spent > 1:
            print(f"generated {paths[name]} in {spent:.1f} s")
    samplings = {  # sparse: a few frames per keyframe interval at most; dense: several in each
        "uniform 16": SamplingConfig(mode="uniform", num_frames=16),
        "1 fps": SamplingConfig(mode="fps", fps=1.0, max_frames=1000),
        "4 fps": SamplingConfig(mode="fps", fps=4.0, max_frames=1000),
    }
    print(f"PyAV {av.__version__}, FFmpeg {getattr(av, 'ffmpeg_version_info', '?')}, {os.cpu_count()} cores, "
          f"best of {args.repeat} interleaved rounds; output frames 224x224")
    header = (f"{'video':<15} {'sampling':<10} {'frames':>6} {'threads':>7} {'auto chose':>10} {'decode-all s':>12} "
              f"{'seek s':>7} {'auto s':>7} {'seek x':>7} {'auto x':>7}")
    print(header)
    print("-" * len(header))
    figures = []
    for name, path in paths.items():
        window = VideoWindow(name, str(path))
        gop = probe(path)[0]
        for label, sampling in samplings.items():
            for threads in args.threads:
                out: dict[str, list] = {}

                def reader(strategy: str, threads: int = threads, sampling: SamplingConfig = sampling,
                           window: VideoWindow = window, out: dict = out) -> None:
                    out[strategy] = read_window(window, sampling, threads=threads, strategy=strategy)

                variants = {s: (lambda s=s: reader(s)) for s in ("decode-all", "seek", "auto")}
                probes: list[float] = []  # what auto adds before it decodes, timed inside its round
                variants["probe"] = lambda path=path, probes=probes: probes.append(probe(path)[1])
                times = interleaved(variants, args.repeat)
                times["probe"] = probes[-args.repeat :]  # the timed rounds' (the first call was the warm-up's)
                same = all(np.array_equal(a.frames, b.frames) for s in ("seek", "auto")
                           for a, b in zip(out[s], out["decode-all"], strict=True))
                frames = sum(len(c.times) for c in out["auto"])
                last = max(float(c.times.max()) for c in out["auto"])
                chose = choose_strategy(frames, last, gop, readers=seek_readers(threads))
                seek = ratio(f"{name}, {label}, {threads or 'auto'} threads: seek speed-up over decode-all",
                             times["decode-all"], times["seek"],
                             target=">= 5" if label == "uniform 16" and name.startswith("3min") else "",
                             note=f"keyframe every {gop:.1f} s")
                auto = ratio(f"{name}, {label}, {threads or 'auto'} threads: auto ({chose}) over decode-all",
                             times["decode-all"], times["auto"],
                             note="when auto decodes everything it runs decode-all's code after its probe: the "
                                  "per-round spread is the machine's noise")
                figures += [seek, auto]
                if chose == "decode-all":
                    # Dense sampling is never slower than decode-all by more than what choosing costs.
                    figures.append(ratio(f"{name}, {label}, {threads or 'auto'} threads: auto's probe / decode-all",
                                         times["probe"], times["decode-all"], target="<= 0.01",
                                         note="keyframe interval from packet headers, then a rewind; same rounds"))
                print(f"{name:<15} {label:<10} {frames:>6} {threads or 'auto':>7} {chose:>10} "
                      f"{min(times['decode-all']):>12.3f} {min(times['seek']):>7.3f} {min(times['auto']):>7.3f} "
                      f"{seek.value:>6.1f}x {auto.value:>6.2f}x{'' if same else '  (frames differ!)'}")
    write_json(args.json, "decode", figures)


def probe(path: Path) -> tuple[float, float]:
    """``auto``'s probe in a container opened as every strategy opens it: the keyframe interval it finds, in
    seconds, and the seconds the probe took (not counted: the open, which decode-all pays too)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start = time.perf_counter()
        gop = keyframe_interval_from_start(container, stream)
        return gop, time.perf_counter() - start


if __name__ == "__main__":
    main()
