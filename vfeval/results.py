"""Run results: ``runs/<name>/results.json`` (schema ``vfeval.result/1``) and ``samples.jsonl``.

The layout follows what users know from lm-evaluation-harness: one JSON of aggregate results with the
config, versions and hashes that explain a number, and one JSONL line per sample with its prediction, so
results can be re-scored (``vfeval rescore``) and compared without re-running a model.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from collections import Counter
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from vfeval import __version__
from vfeval.errors import UsageError
from vfeval.task import SampleResult, Scores, fingerprint

SCHEMA = "vfeval.result/1"
RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.jsonl"
_LIBRARIES = ("numpy", "av", "torch", "jax", "flax", "transformers", "omegaconf", "pluggy", "scikit-learn",
              "pycocoevalcap")


def library_versions() -> dict[str, str]:
    """Installed versions (from package metadata, so nothing heavy is imported)."""
    out = {}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit(path: Path | None = None) -> str | None:
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path or Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return res.stdout.strip() or None if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(plugins: dict[str, str]) -> dict[str, Any]:
    return {
        "vfeval": __version__,
        "plugins": plugins,
        "libraries": library_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def scores_to_dict(scores: Scores) -> dict[str, Any]:
    return {
        "scored": scores.scored,
        "headline": scores.headline,
        "metrics": {k: m.to_dict() for k, m in scores.metrics.items()},
        "breakdowns": {b: {k: m.to_dict() for k, m in table.items()} for b, table in scores.breakdowns.items()},
        "notes": list(scores.notes),
    }


def build_result(
    *,
    run_name: str,
    config: dict[str, Any],
    protocol: dict[str, Any],
    pipeline: dict[str, Any],
    pipeline_fingerprint: str,
    results: list[SampleResult],
    scores: Scores,
    cost: dict[str, Any],
    plugins: dict[str, str],
    outputs: dict[str, str],
    limit: int | None,
) -> dict[str, Any]:
    failed = [r for r in results if r.failed]
    reasons = Counter((r.error or "unknown").split(":", 1)[0] for r in failed)
    return {
        "schema": SCHEMA,
        "run": {"name": run_name, "config": config},
        "task": {
            "name": protocol["task"], "version": protocol["version"], "split": protocol["split"],
            "n": len(results), "n_failed": len(failed), "limit": limit,
        },
        "protocol": {**protocol, "fingerprint": fingerprint(protocol)},
        "pipeline": {**pipeline, "fingerprint": pipeline_fingerprint},
        **scores_to_dict(scores),
        "complete": not failed and limit is None,
        "failures": dict(sorted(reasons.items())),
        "cost": cost,
        "provenance": provenance(plugins),
        "samples": SAMPLES_FILE,
        "outputs": outputs,
    }


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_run(run_dir: Path, result: dict[str, Any], samples: Iterable[SampleResult]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps(s.to_dict(), ensure_ascii=False) for s in samples)
    _atomic_write(run_dir / SAMPLES_FILE, "\n".join(lines) + "\n")
    _atomic_write(run_dir / RESULTS_FILE, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return run_dir / RESULTS_FILE


def read_run(run_dir: str | Path) -> tuple[dict[str, Any], list[SampleResult]]:
    run_dir = Path(run_dir)
    res_path = run_dir / RESULTS_FILE if run_dir.is_dir() else run_dir
    if not res_path.is_file():
        raise UsageError(f"no {RESULTS_FILE} in {run_dir}; pass a run folder written by `vfeval run`")
    result = json.loads(res_path.read_text(encoding="utf-8"))
    if result.get("schema") != SCHEMA:
        raise UsageError(f"{res_path}: schema {result.get('schema')!r} is not {SCHEMA!r}")
    samples_path = res_path.parent / result.get("samples", SAMPLES_FILE)
    if not samples_path.is_file():
        raise UsageError(f"{samples_path} is missing; rescoring needs the per-sample answers")
    with open(samples_path, encoding="utf-8") as f:
        samples = [SampleResult.from_dict(json.loads(line)) for line in f if line.strip()]
    return result, samples


def load_results(paths: Iterable[str | Path]) -> Any:
    """Many results (run folders or results.json files) as a pandas DataFrame, one row per metric."""
    import pandas as pd

    rows = []
    for p in paths:
        p = Path(p)
        res = json.loads((p / RESULTS_FILE if p.is_dir() else p).read_text(encoding="utf-8"))
        base = {
            "run": res["run"]["name"], "task": res["task"]["name"], "split": res["task"]["split"],
            "protocol": res["protocol"]["fingerprint"], "encoder": res["pipeline"]["encoder"]["name"],
            "aggregator": res["pipeline"]["aggregator"]["name"], "pipeline": res["pipeline"]["fingerprint"],
            "n": res["task"]["n"], "n_failed": res["task"]["n_failed"], "complete": res["complete"],
        }
        for name, m in res.get("metrics", {}).items():
            ci = m.get("ci95") or [None, None]
            rows.append({**base, "metric": name, "value": m["value"], "ci_low": ci[0], "ci_high": ci[1],
                         "headline": name == res.get("headline")})
    return pd.DataFrame(rows)
