"""A suite survives interruption: killed in any phase and run again, it ends with the records of a run never killed.

The suite is tiny (6 synthetic questions, a 3-step training run at 32 px, two pipelines) and runs in its
own process group, killed with SIGKILL (as ``kill -9`` or a closed terminal would) at a moment read from the
files it writes: the data's temporary folder, the first training checkpoint, the first pipeline's results.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from vfeval.errors import UsageError

REPO = Path(__file__).resolve().parents[1]

MODEL = (
    "{variant: tiny, tubelet: [2, 8, 8], num_frames: 4, image_size: 32, mask: none, mask_ratio: 0.0, "
    "init: none, text: bytes, text_length: 48, embed_dim: 16, pool: mean, device: cpu}"
)
TRAIN = f"""\
trainer: videofirst-contrastive
name: tiny
model: {MODEL}
data: {{captions: data/train/captions.jsonl, sampling: {{mode: uniform, num_frames: 4, size: 32, crop: 32}}}}
optim: {{lr: 1.0e-3, warmup_steps: 2, steps: 3, batch_size: 2}}
loss: {{kind: sigmoid}}
checkpoint_every: 1
keep_checkpoints: 0
log_every: 1
"""
SUITE = f"""\
suite:
  name: tiny
  prepare:
    data:
      command: data synthetic --out data --videos 6 --train-videos 8 --duration 8 --size 32 --workers 1
      creates: [data/README.md, data/egoschema/questions.json]
  train:
    model: {{config: train.yaml, checkpoint: runs/train-tiny/final.safetensors}}
  tasks:
    egoschema: {{config: {REPO}/configs/egoschema.yaml, overrides: ["task.root=data/egoschema"]}}
  pipelines:
    pixel: {{pipeline: {{encoder: {{name: pixel}}, sampling: {{num_frames: 4, size: 32, crop: 32}}}}}}
    trained:
      needs: [runs/train-tiny/final.safetensors]
      pipeline:
        encoder: {{<<: {MODEL}, name: videofirst, checkpoint: runs/train-tiny/final.safetensors}}
        sampling: {{num_frames: 4, size: 32, crop: 32}}
  leaderboard: {{results: "", site: ""}}
"""
RUNS = ("egoschema/pixel", "egoschema/trained")


def _folder(path: Path) -> Path:
    path.mkdir()
    (path / "train.yaml").write_text(TRAIN)
    (path / "suite.yaml").write_text(SUITE)
    return path


def _env(folder: Path) -> dict[str, str]:
    return {**os.environ, "VFEVAL_CACHE": str(folder / "cache")}


def _kill_when(folder: Path, ready: Callable[[], bool], what: str) -> str:
    """Start the suite, SIGKILL its whole process group (the data command's process too) once ``ready()``;
    returns what it printed."""
    log = folder / "killed.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "vfeval", "run", "suite.yaml"], cwd=folder,
                                env=_env(folder), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while not ready():
                assert proc.poll() is None, f"the suite ended before {what}:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"no {what} after 300 s"
                time.sleep(0.01)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return log.read_text()


def _records(folder: Path) -> dict[str, tuple[str, dict]]:
    """Each run's per-sample log and metrics: the records a rerun must give again, byte for byte."""
    out = {}
    for run in RUNS:
        path = folder / "runs" / "tiny" / run
        out[run] = ((path / "samples.jsonl").read_text(), json.loads((path / "results.json").read_text())["metrics"])
    return out


def _run_here(folder: Path, host, monkeypatch, *overrides: str) -> str:
    """The suite in this process (cheaper than one more process that imports torch); returns what it printed."""
    from vfeval.suite import load_suite, run_suite

    monkeypatch.chdir(folder)
    monkeypatch.setenv("VFEVAL_CACHE", str(folder / "cache"))
    printed = io.StringIO()
    run_suite(load_suite("suite.yaml", overrides), host, Console(file=printed, width=200))
    return printed.getvalue()


def test_a_suite_killed_in_each_phase_ends_with_the_records_of_an_uninterrupted_one(tmp_path, host, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    straight = _folder(tmp_path / "straight")
    _run_here(straight, host, monkeypatch)

    killed = _folder(tmp_path / "killed")
    # 1. While the data is written: nothing half-written is left where the suite looks for it.
    _kill_when(killed, lambda: any((killed / ".data.partial").rglob("*.mp4")), "a video in the data's temporary folder")
    assert not (killed / "data").exists()

    # 2. While training, after its first checkpoint.
    run = killed / "runs" / "train-tiny"
    _kill_when(killed, (run / "step-0000001.state.safetensors").exists, "the first training checkpoint")
    assert not (run / "final.safetensors").exists()
    assert (killed / "data" / "README.md").is_file()

    # A step whose options changed never continues the run it left: one line naming the folder (exit 2).
    with pytest.raises(UsageError) as info:
        _run_here(killed, host, monkeypatch, "suite.train.model.overrides=[optim.lr=0.5]")
    message = str(info.value)
    assert "\n" not in message and "train.model" in message and "optim.lr" in message
    assert "runs/train-tiny" in message

    # 3. While evaluating the trained encoder, after the first pipeline's results.
    printed = _kill_when(killed, (killed / "runs/tiny/egoschema/pixel/results.json").exists, "the first results")
    assert "prepare data: up to date" in printed
    assert "train model: continuing the unfinished run in runs/train-tiny" in printed
    assert (run / "final.safetensors").is_file()
    assert not (killed / "runs/tiny/egoschema/trained/results.json").exists()

    assert "train model: up to date" in _run_here(killed, host, monkeypatch)
    assert _records(killed) == _records(straight)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 4))


def test_synthetic_data_is_written_under_a_temporary_name_and_renamed_when_complete(tmp_path):
    from vfeval_benchmarks.synthetic import write_synthetic

    out = tmp_path / "data"
    small = {"n_videos": 2, "n_train_videos": 0, "size": 32, "duration": 4.0, "workers": 1}
    write_synthetic(out, **small)
    (out / "notes.txt").write_text("mine")
    # What a rewrite killed half-way leaves: its temporary folder, with its marker and part of the videos.
    partial = tmp_path / ".data.partial"
    (partial / "egoschema" / "videos").mkdir(parents=True)
    (partial / "egoschema" / "videos" / "torn.mp4").write_bytes(b"\0")
    (partial / ".vfeval_synthetic.json").write_text(json.dumps({"written": ["egoschema", "README.md"]}))
    written = write_synthetic(out, **{**small, "n_videos": 3})
    assert written["egoschema"] == out / "egoschema"
    assert len(list((out / "egoschema" / "videos").glob("*.mp4"))) == 3
    assert (out / "notes.txt").read_text() == "mine"  # what vfeval did not write moves along, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_two_writers_of_one_synthetic_folder_are_refused(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    from vfeval_benchmarks.synthetic import write_synthetic

    # A writer still running (say, orphaned by a suite killed with kill -9) holds its temporary folder.
    partial = tmp_path / ".data.partial"
    partial.mkdir()
    fd = os.open(partial, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(UsageError, match="another `vfeval data synthetic` is writing"):
            write_synthetic(tmp_path / "data", n_videos=2, n_train_videos=0, size=32, duration=4.0, workers=1)
    finally:
        os.close(fd)
    assert partial.is_dir() and not (tmp_path / "data").exists()


def test_an_option_added_since_a_run_was_saved_is_the_same_at_its_default(tmp_path):
    from vfeval_videofirst.run_files import check_same_run
    from vfeval_videofirst.train_config import TrainConfig

    from vfeval.config import to_dict

    now = to_dict(TrainConfig())
    saved = json.loads(json.dumps(now))
    del saved["model"]["backend"]  # a run saved before the option existed
    check_same_run(saved, now, tmp_path)
    now["model"]["backend"] = "jax"
    with pytest.raises(UsageError, match=r"cannot resume .*model.backend: None -> 'jax'"):
        check_same_run(saved, now, tmp_path)


def test_a_training_step_with_processes_2_trains_under_torchrun(tmp_path, host, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    folder = _folder(tmp_path / "ddp")
    suite = SUITE.replace("checkpoint: runs/train-tiny/final.safetensors}",
                          "checkpoint: runs/train-tiny/final.safetensors, processes: 2}", 1)
    assert "processes: 2" in suite
    # One clip per process: the global batch of the one-process step's two.
    suite = suite.replace("{config: train.yaml,", "{config: train.yaml, overrides: [optim.batch_size=1],", 1)
    assert "optim.batch_size=1" in suite
    (folder / "suite.yaml").write_text(suite)
    printed = _run_here(folder, host, monkeypatch)
    assert "train model: in 2 processes (torchrun): vfeval train train.yaml optim.batch_size=1" in printed
    run = folder / "runs" / "train-tiny"
    assert (run / "final.safetensors").is_file()
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert "train model: up to date" in _run_here(folder, host, monkeypatch)
    assert (folder / "runs/tiny/egoschema/trained/results.json").is_file()


def test_a_training_step_with_no_processes_is_refused_in_one_line(tmp_path):
    from vfeval.suite import load_suite

    folder = _folder(tmp_path / "bad")
    (folder / "suite.yaml").write_text(SUITE.replace("checkpoint: runs/train-tiny/final.safetensors}",
                                                     "checkpoint: runs/train-tiny/final.safetensors, processes: 0}", 1))
    with pytest.raises(UsageError, match=r"^config: 'suite.train.model.processes' must be at least 1, got 0$"):
        load_suite(folder / "suite.yaml")
