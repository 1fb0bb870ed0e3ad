"""What the content identity of videos costs: a first run and reruns over 1,000 videos.

    python bench/cache.py                                  # 1,000 videos of 4 s, 15 fps, 128 px
    python bench/cache.py --videos 200 --keep /tmp/bc      # smaller; keep data and cache
    python bench/cache.py --long 2                         # and two 3-minute 256p videos, hash vs decode

Writes EgoSchema-format data (each video a textured background that pans, with a moving square; H.264, one
keyframe every 2 s), dates every file a minute back (a dataset is not written the second before it is
evaluated; see ``RACY_SECONDS`` in ``vfeval.content``), then runs ``egoschema`` with the ``pixel`` encoder and
the ``identity`` aggregator (the cheapest pipeline, so the identity's share is the largest it gets) over one
cache:

- first run: an empty cache; every file is hashed (``identity s``) and every window decoded;
- rerun: nothing changed; every answer comes from the cache; the identity is one ``stat`` per file and a
  lookup (``identity s``): the overhead of a fully cached rerun is ``identity s`` over the rest of its wall
  time (what the same rerun cost before videos had an identity);
- touched: every file's mtime changed, its bytes not: every file hashed again, nothing recomputed;
- replaced: ``--replace`` videos rewritten with other content under the same ids: only their windows are
  invalidated and computed again.

Then, on the first run's files, one thread each: the seconds to hash every file against the seconds to
decode every window with the run's sampling (8 uniform frames at 128 px) -- the first run's hashing as a
share of its decoding. ``--long N`` adds the same comparison on N 3-minute 256p videos at 30 fps (x264's
default keyframe interval, as ``bench/decode.py``'s), read with 16 uniform frames.

Figures are wall times of ``vfeval.runner.Runner.execute`` (load, requests, identity, cache, decode, encode,
score, write); ``identity s`` is ``RunStats.identity_s``: stat, memo lookups and hashing, the answer keys that
include the identity, and the bookkeeping that counts invalidated windows.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from rich.console import Console
from rich.table import Table

from vfeval.config import SamplingConfig, load_run_config
from vfeval.content import file_digest
from vfeval.plugins import get_plugin_manager
from vfeval.requests import VideoWindow
from vfeval.runner import Runner
from vfeval.video import read_window

COLOURS = ((220, 30, 30), (30, 180, 50), (30, 60, 220), (235, 225, 30), (220, 40, 200))
NAMES = ("red", "green", "blue", "yellow", "magenta")


def write_clip(path: Path, seconds: float, fps: int, height: int, width: int, colour: int, seed: int,
               keyint: int) -> None:
    """A textured background that pans, with a moving square of one colour; H.264, written frame by frame."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 120, (height // 8 + 1, 2 * width // 8 + 1, 3), dtype=np.uint8)
    texture = np.kron(texture, np.ones((8, 8, 1), np.uint8))
    side = max(8, height // 3)
    frames = round(seconds * fps)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(keyint), "preset": "veryfast"}
        for i in range(frames):
            shift = (i * 2) % width
            image = np.ascontiguousarray(texture[:height, shift : shift + width])
            x = int((width - side) * i / max(1, frames - 1))
            image[height // 3 : height // 3 + side, x : x + side] = COLOURS[colour]
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_one(job: tuple) -> None:
    write_clip(*job)


def write_egoschema(root: Path, n: int, seconds: float, fps: int, size: int, workers: int) -> None:
    (root / "videos").mkdir(parents=True, exist_ok=True)
    jobs, questions, answers = [], [], {}
    for i in range(n):
        uid, colour = f"v{i:05d}", i % len(NAMES)
        jobs.append((root / "videos" / f"{uid}.mp4", seconds, fps, size, size, colour, i, 2 * fps))
        questions.append({"q_uid": uid, "google_drive_id": "", "question": "Which colour is the square?",
                          **{f"option {k}": f"the {name} one" for k, name in enumerate(NAMES)}})
        answers[uid] = colour
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_one, jobs, chunksize=16))
    (root / "questions.json").write_text(json.dumps(questions))
    (root / "subset_answers.json").write_text(json.dumps(answers))


def date_back(paths: list[Path], seconds: float = 60.0) -> None:
    past = time.time() - seconds
    for p in paths:
        os.utime(p, (past, past))


def timed_run(host, root: Path, work: Path, args: argparse.Namespace) -> tuple[float, object]:
    cfg = load_run_config(None, [
        "task.name=egoschema", f"task.root={root}", "task.split=subset", "pipeline.encoder.name=pixel",
        "pipeline.aggregator.name=identity", "pipeline.sampling.mode=uniform", "pipeline.sampling.num_frames=8",
        f"pipeline.sampling.size={args.size}", f"pipeline.sampling.crop={args.size}", f"run.workers={args.workers}",
        f"output.dir={work}/runs", f"output.cache_dir={work}/cache",
    ], host.registry)
    start = time.perf_counter()
    outcome = Runner(cfg, host, Console(file=io.StringIO()), progress=False).execute()
    return time.perf_counter() - start, outcome


def hash_vs_decode(videos: list[Path], sampling: SamplingConfig) -> tuple[float, float, int]:
    """(seconds hashing every file, seconds decoding every window, bytes), one after another in this thread."""
    start = time.perf_counter()
    for p in videos:
        file_digest(p)
    hashed = time.perf_counter() - start
    start = time.perf_counter()
    for p in videos:
        read_window(VideoWindow(p.stem, str(p)), sampling, threads=1)
    decoded = time.perf_counter() - start
    return hashed, decoded, sum(p.stat().st_size for p in videos)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each video")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--size", type=int, default=128, help="frame size of the videos and of sampling")
    parser.add_argument("--replace", type=int, default=10, help="videos replaced before the last run")
    parser.add_argument("--workers", type=int, default=2, help="decoding workers, and processes writing the data")
    parser.add_argument("--long", type=int, default=0, help="also compare hash and decode on N 3-minute videos")
    parser.add_argument("--keep", type=Path, help="write data, cache and runs here instead of a temp folder")
    args = parser.parse_args()

    console = Console(width=150)
    with tempfile.TemporaryDirectory(prefix="vfeval-bench-cache-") as tmp:
        work = args.keep or Path(tmp)
        root = work / "ego"
        start = time.perf_counter()
        if not (root / "questions.json").exists():
            write_egoschema(root, args.videos, args.seconds, args.fps, args.size, args.workers)
        written = time.perf_counter() - start
        videos = sorted((root / "videos").glob("*.mp4"))
        for i, p in enumerate(videos[: args.replace]):  # as written, if an earlier --keep run replaced them
            write_clip(p, args.seconds, args.fps, args.size, args.size, i % len(NAMES), i, 2 * args.fps)
        date_back(videos)
        shutil.rmtree(work / "cache", ignore_errors=True)  # --keep reuses the data, never the cache
        host = get_plugin_manager()

        rows = []
        rows.append(("first run (empty cache)", *timed_run(host, root, work, args)))
        rows.append(("rerun (nothing changed)", *timed_run(host, root, work, args)))
        for p in videos:  # new mtime, same bytes
            os.utime(p)
        date_back(videos, 30.0)
        rows.append(("touched (mtime only)", *timed_run(host, root, work, args)))
        for i, p in enumerate(videos[: args.replace]):
            write_clip(p, args.seconds, args.fps, args.size, args.size, (i + 1) % len(NAMES), 10_000 + i, 2 * args.fps)
        date_back(videos[: args.replace])
        rows.append((f"replaced {args.replace}", *timed_run(host, root, work, args)))

        sampling = SamplingConfig(mode="uniform", num_frames=8, size=args.size, crop=args.size)
        hashed, decoded, size = hash_vs_decode(videos, sampling)
        long_rows = []
        if args.long:
            long_dir = work / "long"
            long_dir.mkdir(exist_ok=True)
            paths = []
            for i in range(args.long):
                path = long_dir / f"long{i}.mp4"
                if not path.exists():
                    write_clip(path, 180, 30, 256, 456, i % len(NAMES), i, 250)
                paths.append(path)
            long_rows.append(hash_vs_decode(paths, SamplingConfig(mode="uniform", num_frames=16, size=224, crop=224)))

    table = Table(title=f"content identity: {len(videos)} videos of {args.seconds:g} s at {args.fps} fps, "
                        f"{args.size} px, {size / len(videos) / 1024:.0f} KiB each on average "
                        f"(data written in {written:.1f} s)")
    for column in ("run", "wall s", "identity s", "files hashed", "identity share", "cached", "computed",
                   "invalidated", "decoded"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for name, wall, outcome in rows:
        s = outcome.stats
        share = s.identity_s / max(wall - s.identity_s, 1e-9)
        table.add_row(name, f"{wall:.2f}", f"{s.identity_s:.3f}", str(s.files_hashed), f"{100 * share:.1f}%",
                      str(s.cached), str(s.computed), str(s.windows_invalidated), str(s.windows_decoded))
    console.print(table)
    console.print("identity share: identity s / (wall s - identity s), the cost over the same run without it")

    per = Table(title="hashing against decoding, one thread, the same files")
    for column in ("files", "MiB", "hash s", "decode s", "hash / decode"):
        per.add_column(column, justify="left" if column == "files" else "right")
    per.add_row(f"{len(videos)} x {args.seconds:g} s, {args.size} px, 8 frames", f"{size / 2**20:.1f}",
                f"{hashed:.3f}", f"{decoded:.2f}", f"{100 * hashed / decoded:.1f}%")
    for h, d, b in long_rows:
        per.add_row(f"{args.long} x 3 min, 256p 30 fps, 16 frames", f"{b / 2**20:.1f}", f"{h:.3f}", f"{d:.2f}",
                    f"{100 * h / d:.1f}%")
    console.print(per)


if __name__ == "__main__":
    main()
