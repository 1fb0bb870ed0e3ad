"""Where the quickstart's training time goes: torch threads, and decoding against the training step.

    python bench/trainer.py                      # the quickstart's stage 1: tiny, 16 frames, 64 px, batch 32
    python bench/trainer.py --rounds 2 --clips 8

Step: the tiny videofirst video tower of ``configs/train/synthetic.yaml`` (forward, contrastive loss,
backward, AdamW; without the text tower, which is smaller still), timed in one process at each torch
thread count from 1 to the cores this process may use (``vfeval_videofirst.torch.train.cpu_threads``,
which the trainer sets), in interleaved rounds. A small model on a busy machine often runs fastest on fewer
threads than cores: every parallel op waits for its slowest thread.

Data: ``--clips`` synthetic training videos (24 s, 64 px, 4 fps, as ``vfeval data synthetic`` writes them),
read as stage 1 reads them (16 uniform frames at 64 px) with one FFmpeg thread and with FFmpeg's choice;
the figure is decoding's share of a step when every clip of a batch is decoded (the first epoch; with
``data.cache`` later epochs decode nothing).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import best, interleaved, print_figures, ratio, single, write_json

from vfeval.config import SamplingConfig
from vfeval.requests import VideoWindow
from vfeval.video.reader import read_window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    parser.add_argument("--clips", type=int, default=16, help="training videos to decode")
    parser.add_argument("--processes-steps", type=int, default=40,
                        help="steps of the real trainer per round in 1 and in 2 processes (0: skip)")
    parser.add_argument("--json", help="also write the figures to this JSON file (for bench/run_all.py)")
    ns = parser.parse_args()

    import torch
    from masking import build
    from vfeval_videofirst.torch.train import cpu_threads

    most = cpu_threads()
    step, _ = build("tiny", ns.size, ns.frames, 0.0, -1, ns.batch, "cpu")

    def with_threads(n: int):
        def run() -> None:
            torch.set_num_threads(n)
            for _ in range(ns.steps):
                step()

        return run

    counts = sorted({1, max(1, most // 2), most})
    times = interleaved({str(n): with_threads(n) for n in counts}, ns.rounds)
    note = f"tiny, {ns.frames} frames, {ns.size} px, batch {ns.batch}, interleaved rounds"
    figures = [best(f"training step, {n} torch threads", [t / ns.steps for t in times[str(n)]], note=note)
               for n in counts]
    figures += [best(f"clips/s, {n} torch threads", [ns.batch * ns.steps / t for t in times[str(n)]],
                     unit="clips/s", higher_is_better=True, note=note) for n in counts]
    if most > 1:
        figures.append(ratio(f"speed-up of {most} threads over 1", times["1"], times[str(most)], note=note))

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "vfeval", "data", "synthetic", "--out", tmp, "--videos", "1",
             "--train-videos", str(ns.clips), "--formats", "egoschema", "--workers", "1"],
            check=True, capture_output=True,
        )
        videos = sorted(Path(tmp, "train").rglob("*.mp4"))[: ns.clips]
        if not videos:
            raise SystemExit(f"no training videos under {tmp}/train")
        sampling = SamplingConfig(mode="uniform", num_frames=ns.frames, size=ns.size, crop=ns.size)

        def decode(threads: int):
            return lambda: [read_window(VideoWindow(str(i), str(v)), sampling, threads=threads)
                            for i, v in enumerate(videos)]

        torch.set_num_threads(most)
        both = interleaved({"step": with_threads(most), "decode 1": decode(1), "decode 0": decode(0)}, ns.rounds)
    per_clip = {k: [t / len(videos) for t in both[k]] for k in ("decode 1", "decode 0")}
    per_step = [t / ns.steps for t in both["step"]]
    figures += [
        best("decode one training clip, 1 FFmpeg thread", per_clip["decode 1"], note=f"{len(videos)} videos"),
        best("decode one training clip, FFmpeg's threads", per_clip["decode 0"], note=f"{len(videos)} videos"),
        ratio(f"first epoch: decoding a batch / a step at {most} threads",
              [ns.batch * t for t in per_clip["decode 1"]], per_step,
              note="decoding runs in the training process (data.num_workers 0)"),
        single("torch threads the trainer sets here", most, unit="threads",
               note=f"affinity and cgroup quota; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"),
    ]
    if ns.processes_steps:
        figures += data_parallel(ns.processes_steps, ns.rounds, ns.batch)
    print_figures(f"quickstart stage 1: where a training step's time goes ({note})", figures)
    write_json(ns.json, "trainer", figures)


def data_parallel(steps: int, rounds: int, batch: int) -> list:
    """The real stage-1 trainer (``configs/train/synthetic.yaml``, text tower, order negatives, all captions) in
    one process of ``batch`` clips against torchrun's 2 processes of ``batch / 2``: the same global batch, as
    the quickstart trains it. 64 training videos with every clip cached after the first epoch (2 steps),
    so that the figure is the steady state. Clips/s from wall time per round (process start included)."""
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "vfeval", "data", "synthetic", "--out", tmp, "--videos", "1",
             "--train-videos", "64", "--formats", "egoschema", "--workers", "1"],
            check=True, capture_output=True,
        )
        captions = Path(tmp, "train", "captions.jsonl")
        common = [str(repo / "configs/train/synthetic.yaml"), f"data.captions={captions}", f"optim.steps={steps}",
                  "optim.warmup_steps=2", f"checkpoint_every={steps}", "log_every=1000"]
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        counter = iter(range(10_000))

        def one() -> None:
            subprocess.run([sys.executable, "-m", "vfeval", "train", *common, f"name=p1-{next(counter)}", f"output_dir={tmp}/runs/${{name}}",
                            f"optim.batch_size={batch}"], check=True, capture_output=True)

        def two() -> None:
            subprocess.run([*launch, "-m", "vfeval", "train", *common, f"name=p2-{next(counter)}", f"output_dir={tmp}/runs/${{name}}",
                            f"optim.batch_size={batch // 2}"], check=True, capture_output=True)

        times = interleaved({"1 process": one, "2 processes": two}, rounds, warmup=0)
    note = f"real trainer, {steps} steps of a global batch of {batch}, interleaved rounds, process start included"
    return [
        best("trainer clips/s, 1 process", [batch * steps / t for t in times["1 process"]], unit="clips/s",
             higher_is_better=True, note=note),
        best("trainer clips/s, 2 processes (torchrun)", [batch * steps / t for t in times["2 processes"]],
             unit="clips/s", higher_is_better=True, note=note),
        ratio("speed-up of 2 processes over 1", times["1 process"], times["2 processes"], note=note),
    ]


if __name__ == "__main__":
    main()
