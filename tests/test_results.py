"""Results as users read them: the schema, pandas loading, the cache commands, rescoring from the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vfeval.config import load_run_config
from vfeval.results import (
    RESULTS_FILE,
    SCHEMA,
    ResultError,
    load_result,
    load_results,
    read_run,
    scores_to_dict,
    validate,
    write_run,
)
from vfeval.runner import run
from vfeval.task import Metric, Scores


def _run(tmp_path, host, root, aggregator: str, **extra: str):
    overrides = [
        "task.name=egoschema", f"task.root={root}", "task.split=subset", "pipeline.encoder.name=hashed-text",
        f"pipeline.aggregator.name={aggregator}", f"output.dir={tmp_path}/runs", f"output.cache_dir={tmp_path}/c",
        *[f"{k}={v}" for k, v in extra.items()],
    ]
    return run(load_run_config(None, overrides, host.registry), host, progress=False)


def test_results_load_into_a_dataframe_and_protocols_group_comparable_runs(tmp_path, host, ego_answers_root):
    a = _run(tmp_path, host, ego_answers_root, "random")
    b = _run(tmp_path, host, ego_answers_root, "blind")
    c = _run(tmp_path, host, ego_answers_root, "random", **{"run.limit": "50"})
    df = load_results([a.run_dir, b.run_dir, c.run_dir / "results.json"])
    assert set(df["aggregator"]) == {"random", "blind"}
    head = df[df["headline"]]
    assert len(head) == 3 and head["value"].between(0, 100).all()
    # Same task, version and split: one protocol, so the runs rank together; the limited run is incomplete.
    assert head["protocol"].nunique() == 1
    assert not c.result["complete"] and c.result["task"]["n"] == 50
    assert a.result["pipeline"]["fingerprint"] != b.result["pipeline"]["fingerprint"]
    for key in ("vfeval", "libraries", "git_commit", "date", "plugins"):
        assert key in a.result["provenance"]
    ci = a.result["metrics"]["accuracy"]["ci95"]
    assert ci[0] <= a.result["metrics"]["accuracy"]["value"] <= ci[1]


def test_random_baseline_is_seeded_and_near_chance(tmp_path, host, ego_answers_root):
    first = _run(tmp_path, host, ego_answers_root, "random", **{"output.name": "r1"})
    again = _run(tmp_path, host, ego_answers_root, "random", **{"output.name": "r2", "output.cache_dir": f"{tmp_path}/c2"})
    other = _run(tmp_path, host, ego_answers_root, "random", **{"output.name": "r3",
                                                              "pipeline.aggregator.seed": "1"})
    acc = first.result["metrics"]["accuracy"]
    assert acc == again.result["metrics"]["accuracy"]
    assert acc["ci95"][0] <= 20.0 <= acc["ci95"][1]
    assert other.result["pipeline"]["fingerprint"] != first.result["pipeline"]["fingerprint"]


def test_rescore_and_cache_commands(tmp_path, host, ego_answers_root):
    outcome = _run(tmp_path, host, ego_answers_root, "blind")
    res = subprocess.run([sys.executable, "-m", "vfeval", "rescore", str(outcome.run_dir)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "metrics unchanged" in res.stdout
    assert "rescored" in json.loads((outcome.run_dir / "results.json").read_text())
    info = subprocess.run([sys.executable, "-m", "vfeval", "cache", "info", "--cache-dir", f"{tmp_path}/c"],
                          capture_output=True, text=True)
    assert info.returncode == 0 and "answers: 500" in info.stdout
    subprocess.run([sys.executable, "-m", "vfeval", "cache", "clear", "--cache-dir", f"{tmp_path}/c"], check=True)
    info = subprocess.run([sys.executable, "-m", "vfeval", "cache", "info", "--cache-dir", f"{tmp_path}/c"],
                          capture_output=True, text=True)
    assert "answers: 0" in info.stdout
    bad = subprocess.run([sys.executable, "-m", "vfeval", "rescore", str(tmp_path / "nope")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "results.json" in bad.stderr


def test_one_module_writes_validates_and_loads_a_result(tmp_path, host, ego_answers_root):
    """A result written by a run is valid by the same module's validator, loads back unchanged, and a metric
    with nothing to score (NaN) is written as null, never as JSON's missing NaN."""
    outcome = _run(tmp_path, host, ego_answers_root, "blind")
    path = outcome.run_dir / RESULTS_FILE
    validate(outcome.result)
    assert load_result(outcome.run_dir) == load_result(path) == json.loads(path.read_text())
    assert outcome.result["schema"] == SCHEMA and outcome.result["pipeline"]["family"] == "baseline"

    result, samples = read_run(outcome.run_dir)
    empty = Scores(metrics={"accuracy": Metric(float("nan"), float("nan"), float("nan"), n=0)}, headline="accuracy")
    result.update(scores_to_dict(empty))
    assert result["metrics"]["accuracy"]["value"] is None and result["metrics"]["accuracy"]["ci95"] == [None, None]
    again = tmp_path / "again"
    write_run(again, result, samples)
    assert "NaN" not in (again / RESULTS_FILE).read_text() and load_result(again)["metrics"] == result["metrics"]

    # A writer's bug is refused before results.json is written; the samples are kept for rescoring.
    broken = tmp_path / "broken"
    result["cost"]["wall_s"] = float("inf")
    with pytest.raises(ResultError, match=r"broken/results.json: not written: field 'cost.wall_s' is inf"):
        write_run(broken, result, samples)
    assert (broken / "samples.jsonl").exists() and not (broken / RESULTS_FILE).exists()
