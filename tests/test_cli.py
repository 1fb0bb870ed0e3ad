"""The command line as users meet it: exit codes, one-line errors, fast light commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EGO = REPO / "configs" / "egoschema.yaml"


def vfeval(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vfeval", *args], capture_output=True, text=True, cwd=cwd)


def test_help_and_ls_do_not_import_heavy_libraries():
    for args in (["--help"], ["ls"], ["plugins"]):
        res = subprocess.run([sys.executable, "-X", "importtime", "-m", "vfeval", *args],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-2000:]
        imported = {line.split("|")[-1].strip().split(".")[0] for line in res.stderr.splitlines() if "|" in line}
        assert not imported & {"torch", "jax", "flax", "transformers"}, args


def test_ls_lists_first_party_components():
    res = vfeval("ls")
    assert res.returncode == 0
    for name in ("egoschema", "pixel", "hashed-text", "identity", "mean", "random", "blind", "constant"):
        assert name in res.stdout


@pytest.mark.parametrize(
    "override, expected",
    [
        ("task.rot=/x", "unknown key 'task.rot' (did you mean: root?)"),
        ("pipeline.sampling.fsp=0.5", "unknown key 'pipeline.sampling.fsp' (did you mean: fps?)"),
        ("pipeline.encoder.name=pixl", "unknown encoder 'pixl' (did you mean: pixel?)"),
        ("run.batch_size=abc", "bad value for 'run.batch_size'"),
        ("task.split=val", "task 'egoschema' has splits subset, full"),
        ("pipeline.sampling.mode=dense", "use uniform or fps"),
        ("notakeyvalue", "must look like key=value"),
    ],
)
def test_config_mistakes_are_one_line_with_exit_code_2(tmp_path, override, expected):
    res = vfeval("run", str(EGO), f"task.root={tmp_path}", override, cwd=tmp_path)
    assert res.returncode == 2
    assert expected in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_missing_data_root_lists_expected_files(tmp_path):
    res = vfeval("run", str(EGO), f"task.root={tmp_path / 'nowhere'}", cwd=tmp_path)
    assert res.returncode == 2
    assert "questions.json" in res.stderr and "subset_answers.json" in res.stderr
    assert "vfeval data synthetic" in res.stderr


def test_missing_config_file(tmp_path):
    res = vfeval("run", str(tmp_path / "nope.yaml"))
    assert res.returncode == 2 and "config file not found" in res.stderr


def test_interpolation_from_environment(tmp_path, ego_answers_root):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "task: {name: egoschema, root: '${oc.env:MY_EGO_ROOT}', split: subset}\n"
        "pipeline: {encoder: {name: hashed-text}, aggregator: {name: constant, choice: 1}}\n"
        f"output: {{dir: {tmp_path / 'runs'}, cache_dir: {tmp_path / 'cache'}}}\n"
    )
    import os

    env = {**os.environ, "MY_EGO_ROOT": str(ego_answers_root)}
    res = subprocess.run([sys.executable, "-m", "vfeval", "run", str(cfg)], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    result = json.loads((tmp_path / "runs" / "egoschema-subset-hashed-text-constant" / "results.json").read_text())
    assert result["run"]["config"]["task"]["root"] == str(ego_answers_root)


def test_pipeline_that_cannot_answer_is_refused_before_decoding(tmp_path, ego_answers_root):
    res = vfeval("run", str(EGO), f"task.root={ego_answers_root}", "pipeline.encoder.name=hashed-text",
                 f"output.cache_dir={tmp_path}/c", cwd=tmp_path)
    assert res.returncode == 2
    assert "needs an encoder that can embed_video" in res.stderr
