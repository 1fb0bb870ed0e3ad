"""The run's video pipeline: does decoding overlap the encoder, and does memory stay flat with dataset size?

    python bench/pipeline.py [--dir DIR] [--videos 32] [--modes process thread inline] [--memory-videos 500]

Throughput: an EgoSchema-format dataset of ``--videos`` H.264 videos (20 s, 30 fps, 256-pixel short side,
2 s between keyframes, a coloured square moving over a panning texture), 16 uniform frames at each of
``--sizes`` (224 makes the encoder the slower stage, 112 about as fast as decoding), and the ``pixel``
encoder. For each ``run.decode`` mode it times decoding every window alone (through the same
pool), encoding the decoded clips alone, and the whole run (``vfeval.runner.run``, fresh cache). The run is
as fast as the slower stage when decoding and encoding overlap perfectly: ``overlap`` is the slower stage's
time over the run's time (1.0 is perfect; one after the other would score about
slower / (decode + encode)).

Memory: peak resident memory of a run over ``--memory-videos`` short small videos (2 s, 64x64) and of the
same run limited to a tenth of them, each in a fresh interpreter with process decoding, for the run's own
process and for its largest decoding worker. Flat means the pipeline holds a bounded number of batches.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode import bench_dir, generate  # noqa: E402

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 50), "blue": (30, 60, 220), "yellow": (235, 225, 30),
           "magenta": (220, 40, 200)}


def dataset(root: Path, n: int, seconds: float, short: int, keyint: int, fps: int = 30) -> Path:
    """EgoSchema-format questions about the colour of the square (written once; kept between runs)."""
    marker = root / "questions.json"
    if marker.exists() and len(json.loads(marker.read_text())) == n:
        return root
    (root / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = list(COLOURS)
    questions, answers = [], {}
    for i in range(n):
        uid = f"q{i:04d}"
        colour = names[int(rng.integers(len(names)))]
        generate(root / "videos" / f"{uid}.mp4", seconds, short, keyint, fps=fps, square=COLOURS[colour])
        options = list(rng.permutation(names))
        questions.append({"q_uid": uid, "google_drive_id": "", "question": "Which colour is the square?",
                          **{f"option {k}": f"the {o} one" for k, o in enumerate(options)}})
        answers[uid] = options.index(colour)
    (root / "subset_answers.json").write_text(json.dumps(answers))
    marker.write_text(json.dumps(questions))
    return root


def overrides(root: Path, out: Path, mode: str, *extra: str) -> list[str]:
    return [
        "task.name=egoschema", f"task.root={root}", "task.split=subset",
        "pipeline.encoder.name=pixel", "pipeline.aggregator.name=identity",
        "pipeline.sampling.num_frames=16", "pipeline.sampling.size=224", "pipeline.sampling.crop=224",
        "run.batch_size=8", f"run.decode={mode}", f"output.dir={out}", f"output.cache_dir={out / 'cache'}",
        *extra,
    ]


def throughput(root: Path, modes: list[str], size: int, work: Path) -> None:
    from vfeval.config import load_run_config
    from vfeval.pipeline import Pipeline
    from vfeval.plugins import get_plugin_manager
    from vfeval.runner import run
    from vfeval.video.pool import open_pool, plan

    host = get_plugin_manager()
    n = len(json.loads((root / "questions.json").read_text()))
    header = (f"{'decode':<8} {'workers':>7} {'frames':>7} {'videos':>6} {'decode s':>8} {'encode s':>8} "
              f"{'run s':>7} {'videos/s':>8} {'overlap':>7}")
    print(header)
    print("-" * len(header))
    for mode in modes:
        out = work / f"{mode}-{size}"
        extra = (f"output.name={mode}", f"pipeline.sampling.size={size}", f"pipeline.sampling.crop={size}")
        cfg = load_run_config(None, overrides(root, out, mode, *extra), host.registry)
        pipeline = Pipeline.from_config(cfg.pipeline, host.registry, cfg.run.seed)
        task = host.registry.get("tasks", "egoschema").load()(cfg.task)
        windows = [s.video for s in task.load()]
        chosen = plan(mode, cfg.run.workers, len(windows))

        t0 = time.perf_counter()
        with open_pool(mode, cfg.run.workers, cfg.run.video_timeout, pipeline.decoder, n) as pool:
            jobs = [pool.submit(w, cfg.pipeline.sampling) for w in windows]
            clips = [job.result() for job in jobs]
        decode_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        for i in range(0, len(clips), cfg.run.batch_size):
            pipeline.compute_inputs(clips[i : i + cfg.run.batch_size])
        encode_s = time.perf_counter() - t0
        del clips

        t0 = time.perf_counter()
        result = run(cfg, host, progress=False).result
        run_s = time.perf_counter() - t0
        assert result["task"]["n_failed"] == 0, result["failures"]
        slower = max(decode_s, encode_s)
        print(f"{mode:<8} {chosen.workers:>7} {f'16x{size}':>7} {n:>6} {decode_s:>8.2f} {encode_s:>8.2f} "
              f"{run_s:>7.2f} {n / run_s:>8.2f} {slower / run_s:>7.2f}")


# Peak RSS from /proc (VmHWM): getrusage's ru_maxrss survives exec, so a child would report its parent's peak.
MEASURE = """
import json, os, sys, threading, time
from pathlib import Path

def hwm_kb(pid="self"):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0

workers, done = {}, threading.Event()
def watch():  # the decoding workers' peaks, sampled while they live
    while not done.wait(0.05):
        for child in Path("/proc").glob("[0-9]*"):
            try:
                if child.name != str(os.getpid()) and b"vfeval.video.worker" in (child / "cmdline").read_bytes():
                    workers[child.name] = max(workers.get(child.name, 0), hwm_kb(child.name))
            except OSError:
                pass
threading.Thread(target=watch, daemon=True).start()

from vfeval.config import load_run_config
from vfeval.plugins import get_plugin_manager
from vfeval.runner import run
host = get_plugin_manager()
res = run(load_run_config(None, json.loads(sys.argv[1]), host.registry), host, progress=False).result
done.set()
print(json.dumps({"n": res["task"]["n"], "failed": res["task"]["n_failed"], "wall_s": res["cost"]["wall_s"],
                  "self_kb": hwm_kb(), "workers_kb": max(workers.values(), default=0)}))
"""


def memory(root: Path, n: int, work: Path) -> None:
    header = f"{'videos':>6} {'decode':<8} {'run s':>6} {'run peak RSS MB':>15} {'worker peak RSS MB':>18}"
    print(header)
    print("-" * len(header))
    for limit in (n // 10, n):
        out = work / f"memory-{limit}"
        args = overrides(root, out, "process", f"run.limit={limit}", "pipeline.sampling.size=64",
                         "pipeline.sampling.crop=64", f"output.name=m{limit}")
        done = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(args)], capture_output=True, text=True)
        if done.returncode:
            sys.exit(done.stderr)
        got = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{got['n']:>6} {'process':<8} {got['wall_s']:>6.1f} {got['self_kb'] / 1024:>15.1f} "
              f"{got['workers_kb'] / 1024:>18.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=bench_dir())
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--modes", nargs="+", default=["process", "thread", "inline"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 112],
                        help="frame sizes: the pixel encoder's cost grows with the pixels, decoding's hardly")
    parser.add_argument("--memory-videos", type=int, default=500)
    args = parser.parse_args()

    t0 = time.perf_counter()
    big = dataset(args.dir / f"pipeline-{args.videos}", args.videos, 20, 256, 60)
    small = dataset(args.dir / f"memory-{args.memory_videos}", args.memory_videos, 2, 64, 30, fps=8)
    if time.perf_counter() - t0 > 1:
        print(f"generated the datasets in {time.perf_counter() - t0:.0f} s")
    print(f"{os.cpu_count()} cores; pixel encoder, 16 uniform frames, batches of 8")
    with tempfile.TemporaryDirectory() as work:
        for size in args.sizes:
            throughput(big, args.modes, size, Path(work))
            print()
        memory(small, args.memory_videos, Path(work))


if __name__ == "__main__":
    main()
