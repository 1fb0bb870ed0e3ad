"""What the answer cache and the feature store save: three MSR-VTT tasks sharing one pipeline, run twice.

    python bench/feature_store.py                        # 40 test videos (+40 train, 8 validate), 128 px
    python bench/feature_store.py --videos 100 --frames 32 --keep /tmp/fs

Writes synthetic MSR-VTT data, then runs ``msrvtt_retrieval`` (split full), ``msrvtt_category`` (train ->
test) and ``msrvtt_retrieval`` (split 1k-A) with the pixel encoder and the identity aggregator, three times
over one cache:

- first run: an empty cache; each video is decoded and encoded once (the second and third tasks already
  find the test videos' answers);
- second run: the same commands again: every answer comes from the cache (what a rerun or resumed run
  costs);
- features only: the same tasks with the ``mean`` aggregator, a new pipeline whose answers are not cached,
  over the same encoder and sampling: every window's embeddings come from the feature store, none is decoded.

Each figure is the wall time of ``vfeval.runner.run`` (load, requests, decode, encode, score, write).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from vfeval_benchmarks.synthetic import write_synthetic

from vfeval.config import load_run_config
from vfeval.plugins import get_plugin_manager
from vfeval.runner import run

TASKS = (("msrvtt_retrieval", "full"), ("msrvtt_category", "full"), ("msrvtt_retrieval", "1k-A"))


def timed_runs(host, root: Path, work: Path, args: argparse.Namespace, aggregator: str) -> list[tuple]:
    """(seconds, RunStats) of each task of TASKS, in order."""
    out = []
    for name, split in TASKS:
        cfg = load_run_config(None, [
            f"task.name={name}", f"task.root={root}", f"task.split={split}", "pipeline.encoder.name=pixel",
            f"pipeline.aggregator.name={aggregator}", f"pipeline.sampling.num_frames={args.frames}",
            f"pipeline.sampling.size={args.size}", f"pipeline.sampling.crop={args.size}",
            f"run.workers={args.workers}", f"output.dir={work}/runs", f"output.cache_dir={work}/cache",
        ], host.registry)
        start = time.perf_counter()
        outcome = run(cfg, host, progress=False)
        out.append((time.perf_counter() - start, outcome.stats))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=40, help="synthetic MSR-VTT test videos")
    parser.add_argument("--size", type=int, default=128, help="frame size of the videos and of sampling")
    parser.add_argument("--duration", type=float, default=24.0, help="seconds (MSR-VTT videos get half)")
    parser.add_argument("--frames", type=int, default=16, help="frames sampled per video")
    parser.add_argument("--workers", type=int, default=2, help="decoding workers")
    parser.add_argument("--keep", type=Path, help="write data, cache and runs here instead of a temp folder")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vfeval-bench-") as tmp:
        work = args.keep or Path(tmp)
        start = time.perf_counter()
        write_synthetic(work / "data", formats=["msrvtt"], n_videos=args.videos, n_train_videos=0,
                        size=args.size, duration=args.duration, workers=args.workers)
        written = time.perf_counter() - start
        host = get_plugin_manager()
        root = work / "data" / "msrvtt"
        first = timed_runs(host, root, work, args, "identity")
        second = timed_runs(host, root, work, args, "identity")
        features = timed_runs(host, root, work, args, "mean")

    table = Table(title=f"feature store: {args.videos} test videos, {args.frames} frames at {args.size} px "
                        f"(data written in {written:.1f} s)")
    for column in ("task", "first run s", "decoded", "second run s", "speed-up", "features only s",
                   "from store", "decoded "):
        table.add_column(column, justify="left" if column == "task" else "right")
    for (name, split), (t1, s1), (t2, _), (t3, s3) in zip(TASKS, first, second, features):
        table.add_row(f"{name} {split}", f"{t1:.2f}", str(s1.windows_decoded), f"{t2:.2f}", f"{t1 / t2:.1f}x",
                      f"{t3:.2f}", str(s3.windows_from_store), str(s3.windows_decoded))
    total = [sum(t for t, _ in runs) for runs in (first, second, features)]
    table.add_row("all three", f"{total[0]:.2f}", str(sum(s.windows_decoded for _, s in first)),
                  f"{total[1]:.2f}", f"{total[0] / total[1]:.1f}x", f"{total[2]:.2f}",
                  str(sum(s.windows_from_store for _, s in features)),
                  str(sum(s.windows_decoded for _, s in features)))
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
