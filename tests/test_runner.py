"""End to end through the runner: results, resume after kill -9, rescoring, failed videos."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from vfeval.config import load_run_config
from vfeval.runner import rescore, run
from vfeval.testing import write_video

REPO = Path(__file__).resolve().parents[1]
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 50), "blue": (30, 60, 220), "yellow": (235, 225, 30),
           "magenta": (220, 40, 200)}


def colour_egoschema(root: Path, n: int, seed: int = 0) -> dict[str, int]:
    """EgoSchema-format data: each video is filled with one colour; the question asks which."""
    rng = np.random.default_rng(seed)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    questions, answers = [], {}
    for i in range(n):
        uid = f"q{i:04d}"
        colour = names[int(rng.integers(len(names)))]
        frames = np.zeros((8, 32, 32, 3), np.uint8)
        frames[:] = (40, 40, 40)
        frames[:, 8:24, 8:24] = COLOURS[colour]
        write_video(root / "videos" / f"{uid}.mp4", frames, fps=4)
        options = list(rng.permutation(names))
        questions.append({"q_uid": uid, "google_drive_id": "", "question": "Which colour is the square?",
                          **{f"option {k}": f"the {o} one" for k, o in enumerate(options)}})
        answers[uid] = options.index(colour)
    (root / "questions.json").write_text(json.dumps(questions))
    (root / "subset_answers.json").write_text(json.dumps(answers))
    return answers


def config_file(tmp_path: Path, root: Path, **extra: str) -> Path:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        task: {{name: egoschema, root: {root}, split: subset}}
        pipeline:
          encoder: {{name: pixel}}
          aggregator: {{name: identity}}
          sampling: {{mode: uniform, num_frames: 4, size: 32, crop: 32}}
        run: {{batch_size: 2}}
        output: {{dir: {tmp_path / 'runs'}, cache_dir: {tmp_path / 'cache'}}}
        """))
    return cfg


def test_pixel_baseline_end_to_end_writes_results_and_samples(tmp_path, host):
    root = tmp_path / "ego"
    colour_egoschema(root, 10)
    cfg = load_run_config(config_file(tmp_path, root), [], host.registry)
    outcome = run(cfg, host, progress=False)
    res = json.loads((outcome.run_dir / "results.json").read_text())
    assert res["schema"] == "vfeval.result/1"
    assert res["metrics"]["accuracy"]["value"] == 100.0
    assert res["task"] == {"name": "egoschema", "version": "1", "split": "subset", "n": 10, "n_failed": 0,
                           "limit": None}
    assert res["complete"] is True
    assert res["pipeline"]["sampling"]["num_frames"] == 4 and res["pipeline"]["encoder"]["name"] == "pixel"
    lines = (outcome.run_dir / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 10 and json.loads(lines[0])["correct"] is True
    assert json.loads((outcome.run_dir / "submission.json").read_text())["q0000"] in range(5)

    # A second run answers everything from the cache and gives the same metrics.
    again = run(cfg, host, progress=False)
    assert again.stats.cached == 10 and again.stats.computed == 0
    assert again.result["metrics"] == res["metrics"]


def test_answer_always_k_scores_the_share_of_k_in_the_real_subset(tmp_path, host, ego_answers_root):
    answers = json.loads((ego_answers_root / "subset_answers.json").read_text())
    for k in range(5):
        cfg = load_run_config(None, [
            "task.name=egoschema", f"task.root={ego_answers_root}", "task.split=subset",
            "pipeline.encoder.name=hashed-text", "pipeline.aggregator.name=constant",
            f"pipeline.aggregator.choice={k}", f"output.dir={tmp_path}/runs", f"output.cache_dir={tmp_path}/c",
        ], host.registry)
        res = run(cfg, host, progress=False).result
        share = 100.0 * sum(v == k for v in answers.values()) / len(answers)
        assert res["task"]["n"] == 500
        assert res["metrics"]["accuracy"]["value"] == pytest.approx(share)


def test_failed_videos_are_recorded_and_the_run_completes(tmp_path, host):
    root = tmp_path / "ego"
    colour_egoschema(root, 8)
    (root / "videos" / "q0001.mp4").unlink()
    (root / "videos" / "q0002.mp4").write_bytes(b"")
    (root / "videos" / "q0003.mp4").write_bytes(os.urandom(2048))
    cfg = load_run_config(config_file(tmp_path, root), [], host.registry)
    res = run(cfg, host, progress=False).result
    assert res["task"]["n_failed"] == 3 and res["complete"] is False
    assert res["metrics"]["accuracy"]["n"] == 5 and res["metrics"]["accuracy"]["value"] == 100.0
    samples = [json.loads(line) for line in (Path(res["run"]["config"]["output"]["dir"]) /
               res["run"]["name"] / "samples.jsonl").read_text().splitlines()]
    errors = {s["id"]: s["error"] for s in samples if s["error"]}
    assert set(errors) == {"q0001", "q0002", "q0003"}
    assert all(errors.values())

    # Failed videos are not retried on resume unless asked.
    again = run(cfg, host, progress=False)
    assert again.stats.computed == 0 and again.stats.windows_decoded == 0
    (root / "videos" / "q0001.mp4").write_bytes((root / "videos" / "q0000.mp4").read_bytes())
    retried = run(load_run_config(config_file(tmp_path, root), ["run.retry_failed=true"], host.registry),
                  host, progress=False)
    assert retried.stats.computed == 3 and retried.result["task"]["n_failed"] == 2


def test_rescore_reproduces_metrics_from_saved_answers(tmp_path, host):
    root = tmp_path / "ego"
    colour_egoschema(root, 6)
    cfg = load_run_config(config_file(tmp_path, root), ["pipeline.aggregator.name=random"], host.registry)
    outcome = run(cfg, host, progress=False)
    for p in (root / "videos").iterdir():  # rescoring never touches videos or the model
        p.unlink()
    old, new = rescore(outcome.run_dir, host)
    assert new["metrics"] == old["metrics"] and "rescored" in new


SLOW_PLUGIN = '''
import time
from dataclasses import dataclass
from vfeval import hookimpl
from vfeval.specs import EncoderSpec
from vfeval_baselines.encoders.pixel import PixelColourEncoder, PixelConfig

@dataclass
class SlowConfig(PixelConfig):
    name: str = "slow-pixel"

class Slow(PixelColourEncoder):
    def embed_video(self, clips):
        time.sleep(0.15)
        return super().embed_video(clips)

def make(config):
    return Slow()

@hookimpl
def register_encoders(register):
    register(EncoderSpec(name="slow-pixel", factory="slowplug:make", config=SlowConfig,
                         capabilities=("embed_video", "embed_text")))
'''


def _answered(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_killed_run_resumes_without_recomputing_and_gives_identical_metrics(tmp_path):
    site = tmp_path / "site"
    (site / "slowplug-0.1.dist-info").mkdir(parents=True)
    (site / "slowplug-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: slowplug\nVersion: 0.1\n")
    (site / "slowplug-0.1.dist-info" / "entry_points.txt").write_text("[vfeval]\nslow = slowplug\n")
    (site / "slowplug.py").write_text(SLOW_PLUGIN)
    env = {**os.environ, "PYTHONPATH": str(site), "VFEVAL_PLUGINS": "core,benchmarks,baselines,slow"}
    root = tmp_path / "ego"
    colour_egoschema(root, 24)
    cfg = config_file(tmp_path, root)
    cmd = [sys.executable, "-m", "vfeval", "run", str(cfg), "pipeline.encoder.name=slow-pixel"]
    db = tmp_path / "cache" / "vfeval.sqlite"

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while _answered(db) < 6 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _answered(db)
    assert 0 < done < 24, "the run should have been killed part-way"

    resumed = subprocess.run(cmd + ["--name", "resumed"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"cached {done}, computed {24 - done}" in resumed.stdout.replace("\n", " ")

    fresh_cfg = [*cmd, "--name", "fresh", f"output.cache_dir={tmp_path / 'fresh-cache'}"]
    fresh = subprocess.run(fresh_cfg, env=env, capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr
    a = json.loads((tmp_path / "runs" / "resumed" / "results.json").read_text())
    b = json.loads((tmp_path / "runs" / "fresh" / "results.json").read_text())
    assert json.dumps(a["metrics"], sort_keys=True) == json.dumps(b["metrics"], sort_keys=True)
    assert a["pipeline"]["fingerprint"] == b["pipeline"]["fingerprint"]
