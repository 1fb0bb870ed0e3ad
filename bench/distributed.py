"""Scaling an evaluation out: throughput of one process against two (``torchrun --nproc_per_node=2``), and the
time rank 0 takes to merge the shards' answers.

    python bench/distributed.py                       # 24 videos, 3 rounds
    python bench/distributed.py --videos 8 --rounds 1 # a quick look
    python bench/distributed.py --merge 100000        # the merge at 100k answers (the default)

Two pipelines over the same synthetic EgoSchema videos (written by ``vfeval_benchmarks.synthetic``):

- decode-bound: the ``pixel`` encoder (a few numpy operations per frame) over 30 fps, 128 px videos, 32
  uniform frames per video: nearly all the time is decoding;
- encode-bound: ``hf-clip``, a randomly initialised CLIP built locally (``vfeval.testing_models.build_clip``:
  a 2-layer ViT of width 128, MLP 512, 64 px images in 8 px patches) over 16 frames per video of 4 fps, 64 px
  videos: nearly all the time is the forward pass.

Each round runs each pipeline once in one process (``python -m vfeval run``) and once in two (``python -m
torch.distributed.run --nproc_per_node=2 -m vfeval run``), each with an empty cache, in a rotating order. A
run's time is its ``cost.wall_s`` (rank 0's clock from reading the task to writing results.json: every rank's
shard, the waits, the merge and the scoring, without the interpreter's and torch's start-up, which are the
same for any dataset size). Throughput is videos over that time; the scaling efficiency is the speed-up of two
processes over one, divided by two (1.0: perfect). The figures are best-of-rounds; ratios are formed from the
best times of interleaved rounds (``bench/harness.py``).

The merge: ``--merge`` answers (5 option scores each, as EgoSchema's) written into 4 shard files, then read
back by rank 0's merge (``vfeval.cache.open_cache(...).get_answers``), against the same answers in one file.

On a machine with fewer cores than processes per run plus decoding workers, two processes cannot be faster
than one: the figure then says what sharding costs (the agreement, the shard files, the merge), not what it
gains. ``--workers`` sets the decoding threads of each process (default: 1, so that one process does not
already use every core of a small machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from harness import Figure, best, print_figures, ratio, write_json

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, root: Path, encoder: str, frames: int, size: int, workers: int,
                 batch_size: int) -> Path:
    path.write_text(textwrap.dedent(f"""\
        task: {{name: egoschema, root: {root}, split: subset}}
        pipeline:
          encoder: {encoder}
          aggregator: {{name: identity}}
          sampling: {{mode: uniform, num_frames: {frames}, size: {size}, crop: {size}}}
        run: {{batch_size: {batch_size}, decode: thread, workers: {workers}}}
        """))
    return path


def run_once(cfg: Path, out: Path, procs: int, env: dict[str, str]) -> dict:
    """One run with an empty cache; its results.json."""
    shutil.rmtree(out, ignore_errors=True)
    args = ["run", str(cfg), f"output.dir={out / 'runs'}", f"output.cache_dir={out / 'cache'}", "--name", "r"]
    if procs == 1:
        cmd = [sys.executable, "-m", "vfeval", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}",
               f"--master_port={free_port()}", "-m", "vfeval", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return json.loads((out / "runs" / "r" / "results.json").read_text())


def scaling(pipelines: dict[str, Path], videos: int, rounds: int, work: Path, env: dict[str, str]) -> list[Figure]:
    times: dict[tuple[str, int], list[float]] = {(p, n): [] for p in pipelines for n in (1, 2)}
    rank_rates: dict[str, list[float]] = {p: [] for p in pipelines}
    variants = list(times)
    for r in range(rounds):
        for k in range(len(variants)):
            name, procs = variants[(r + k) % len(variants)]
            result = run_once(pipelines[name], work / f"{name}-{procs}", procs, env)
            times[(name, procs)].append(result["cost"]["wall_s"])
            if procs == 2:
                rank_rates[name].extend(rank["per_s"] or 0.0 for rank in result["cost"]["world"]["ranks"])
            print(f"  round {r + 1}: {name}, {procs} process(es): {result['cost']['wall_s']:.2f} s", flush=True)
    figures: list[Figure] = []
    for name in pipelines:
        one, two = times[(name, 1)], times[(name, 2)]
        figures.append(best(f"{name}: videos/s, 1 process", [videos / t for t in one], unit="videos/s",
                            higher_is_better=True))
        figures.append(best(f"{name}: videos/s, 2 processes", [videos / t for t in two], unit="videos/s",
                            higher_is_better=True))
        figures.append(ratio(f"{name}: speed-up of 2 processes over 1", one, two))
        figures.append(ratio(f"{name}: scaling efficiency (speed-up / 2)", one, two, scale=0.5))
        figures.append(best(f"{name}: requests/s of a rank of 2, on its own share", rank_rates[name],
                            unit="req/s", higher_is_better=True, note="cost.world.ranks[].per_s"))
    return figures


def merge_figures(n: int, rounds: int, work: Path) -> list[Figure]:
    """Seconds to read ``n`` answers back from 4 shard files (rank 0's merge) and from one file."""
    from vfeval.cache import Cache, Entry, open_cache, shard_path

    rng = np.random.default_rng(0)
    keys = [f"{i:032x}" for i in range(n)]
    sharded, single = work / "merge-shards", work / "merge-one"
    for folder in (sharded, single):
        shutil.rmtree(folder, ignore_errors=True)
    for rank in range(4):
        cache = Cache(shard_path(sharded, rank, 4))
        for start in range(rank * 256, n, 4 * 256):  # committed a batch at a time, as ranks do
            part = keys[start : start + 256]
            cache.put_answers("p", {k: Entry(True, rng.random(5).astype(np.float32)) for k in part})
        cache.close()
    one = Cache(shard_path(single, 0, 1))
    for start in range(0, n, 1024):
        one.put_answers("p", {k: Entry(True, rng.random(5).astype(np.float32)) for k in keys[start : start + 1024]})
    one.close()

    def read(folder: Path, world: int) -> float:
        start = time.perf_counter()
        cache = open_cache(folder, 0, world)
        got = cache.get_answers("p", keys)
        cache.close()
        assert len(got) == n
        return time.perf_counter() - start

    shard_times, one_times = [], []
    for _ in range(rounds):
        shard_times.append(read(sharded, 4))
        one_times.append(read(single, 1))
    return [
        best(f"merge of {n} answers from 4 shards", shard_times, unit="s"),
        best(f"read of {n} answers from one file", one_times, unit="s"),
        ratio("merge from 4 shards / read from one file", shard_times, one_times),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="decoding threads per process")
    parser.add_argument("--merge", type=int, default=100_000, help="answers in the merge benchmark (0: skip)")
    parser.add_argument("--keep", type=Path, default=None, help="folder for data and runs (kept)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from vfeval_benchmarks.synthetic import write_synthetic

    from vfeval.testing_models import build_clip

    work = args.keep or Path(tempfile.mkdtemp(prefix="vfeval-bench-dist-"))
    work.mkdir(parents=True, exist_ok=True)
    decode_data = work / "data-decode"
    encode_data = work / "data-encode"
    if not (decode_data / "egoschema").exists():
        write_synthetic(decode_data, seed=0, formats=["egoschema"], n_videos=args.videos, n_train_videos=0,
                        duration=20.0, size=128, fps=30)
    if not (encode_data / "egoschema").exists():
        write_synthetic(encode_data, seed=0, formats=["egoschema"], n_videos=args.videos, n_train_videos=0,
                        duration=8.0, size=64, fps=4)
    clip = work / "clip"
    if not (clip / "config.json").exists():
        build_clip(clip, image_size=64, patch=8, width=128, projection=64, vision_mlp=512)
    pipelines = {
        "decode-bound": write_config(
            work / "decode.yaml", decode_data / "egoschema", "{name: pixel}", 32, 128, args.workers, 4),
        "encode-bound": write_config(
            work / "encode.yaml", encode_data / "egoschema",
            f"{{name: hf-clip, model: {clip}, device: cpu, batch_size: 16}}", 16, 64, args.workers, 4),
    }
    n_samples = len(json.loads((decode_data / "egoschema" / "subset_answers.json").read_text()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VFEVAL_PLUGINS": "core,benchmarks,baselines"}
    print(f"{n_samples} videos per run; {os.cpu_count()} cores; data in {work}", flush=True)
    figures = scaling(pipelines, n_samples, args.rounds, work, env)
    if args.merge:
        figures += merge_figures(args.merge, max(1, args.rounds), work)
    print_figures("distributed evaluation: 1 process against 2 (torchrun, gloo, CPU)", figures)
    write_json(args.json, "distributed", figures)
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
