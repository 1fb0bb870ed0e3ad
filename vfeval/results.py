"""Run results: ``runs/<name>/results.json`` (schema ``vfeval.result/1``) and ``samples.jsonl``.

The layout follows what users know from lm-evaluation-harness: one JSON of aggregate results with the
config, versions and hashes that explain a number, and one JSONL line per sample with its prediction, so
results can be re-scored (``vfeval rescore``) and compared without re-running a model.

This module owns the schema: it builds a result (``build_result``), validates it (``validate``: the fields and
their types, finite numbers only, nothing nested deeper than ``MAX_DEPTH``), writes it (``write_run``, which
refuses an invalid one) and loads it (``load_result``; ``read_run``, ``load_results``). The leaderboard reads
records only through ``load_result``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from vfeval import __version__
from vfeval.errors import UsageError
from vfeval.hashing import fingerprint
from vfeval.task import Metric, SampleResult, Scores

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


def git_dirty(path: Path | None = None) -> bool | None:
    """Whether the checkout vfeval runs from has uncommitted changes (tracked or untracked, not ignored): a
    number made from a dirty tree cannot be reproduced from ``git_commit`` alone. None outside a git checkout."""
    try:
        res = subprocess.run(["git", "status", "--porcelain"], cwd=path or Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(res.stdout.strip()) if res.returncode == 0 else None


def provenance(plugins: dict[str, str], world_size: int = 1) -> dict[str, Any]:
    """What code made a result: versions of vfeval, its plugins and libraries, and the git commit of the
    checkout with whether it had uncommitted changes (``git_dirty``); and how many processes computed it
    (``world_size``: recorded, never hashed, as it changes no number)."""
    return {
        "vfeval": __version__,
        "plugins": plugins,
        "libraries": library_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "world_size": int(world_size),
    }


# ---------------------------------------------------------------------------------------------------
# The schema: what a valid ``vfeval.result/1`` holds. Writers validate what they write; the leaderboard,
# ``rescore`` and ``load_results`` read only through ``load_result``.


class ResultError(UsageError):
    """A result that does not follow ``vfeval.result/1``; the message names the file and the field."""


@dataclass(frozen=True)
class Kind:
    what: str
    test: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


TEXT = Kind("a string", lambda v: isinstance(v, str))
NAME = Kind("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip()))
COUNT = Kind("a non-negative integer", lambda v: _is_int(v) and v >= 0)
BOOL = Kind("true or false", lambda v: isinstance(v, bool))
MAYBE_NUMBER = Kind("a finite number or null", lambda v: v is None or _is_number(v))
MAPPING = Kind("an object", lambda v: isinstance(v, dict))
LIST = Kind("a list", lambda v: isinstance(v, list))
LIMIT = Kind("null or a positive integer", lambda v: v is None or (_is_int(v) and v > 0))
CI = Kind("null or a list of two finite numbers (or nulls)", lambda v: v is None or (
    isinstance(v, list) and len(v) == 2 and all(x is None or _is_number(x) for x in v)))
MAYBE_COUNT = Kind("null or a non-negative integer", lambda v: v is None or (_is_int(v) and v >= 0))

MAX_DEPTH = 32
"""Objects and lists nested deeper than this are refused: no writer makes them, and readers recurse."""

# Keys ending in "?" are optional. A nested dict is an object with those fields.
RESULT_FIELDS: dict[str, Any] = {
    "schema": TEXT,
    "run": {"name": NAME, "config": MAPPING},
    "task": {"name": NAME, "version": TEXT, "split": TEXT, "n": COUNT, "n_failed": COUNT, "limit": LIMIT},
    "protocol": {"task": NAME, "version": TEXT, "split": TEXT, "metric_versions": MAPPING, "options": MAPPING,
                 "fingerprint": NAME},
    "pipeline": {"encoder": {"name": NAME, "backend?": NAME}, "aggregator": {"name": NAME}, "sampling": MAPPING,
                 "fingerprint": NAME, "family?": NAME, "training?": MAPPING},
    "scored": BOOL,
    "headline": TEXT,
    "metrics": MAPPING,
    "breakdowns?": MAPPING,
    "notes?": LIST,
    "complete": BOOL,
    "failures": MAPPING,
    "cost": MAPPING,
    "provenance": MAPPING,
    "samples?": TEXT,
    "outputs?": MAPPING,
}
METRIC_FIELDS: dict[str, Any] = {"value": MAYBE_NUMBER, "ci95?": CI, "n?": MAYBE_COUNT, "higher_is_better?": BOOL}
"""A metric's value is null when nothing could be scored (every sample failed)."""


def _short(value: Any) -> str:
    if isinstance(value, (dict, list)):  # never serialised whole: it may be huge or deeply nested
        return f"an object of {len(value)} keys" if isinstance(value, dict) else f"a list of {len(value)} items"
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _where(path: list[Any]) -> str:
    text = ".".join(str(p) for p in path) or "(top level)"
    return text if len(text) <= 80 else text[:77] + "..."


def _check_values(data: Any) -> None:
    """Every number finite (JSON has no NaN or Infinity; Python's ``json`` reads and writes them anyway) and
    nothing nested deeper than ``MAX_DEPTH``; walked without recursion."""
    stack: list[tuple[Any, list[Any]]] = [(data, [])]
    while stack:
        value, path = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise ResultError(f"field {_where(path)!r} is {value!r}; a result holds finite numbers (or null)")
        if isinstance(value, (dict, list)):
            if len(path) >= MAX_DEPTH:
                raise ResultError(f"field {_where(path[:4])!r} is nested more than {MAX_DEPTH} levels deep")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((v, [*path, k]) for k, v in items)


def _check(value: Any, spec: Any, path: str) -> None:
    if isinstance(spec, Kind):
        if not spec.test(value):
            raise ResultError(f"field {path!r} must be {spec.what}, got {_short(value)}")
        return
    if not isinstance(value, dict):
        raise ResultError(f"field {path!r} must be an object, got {_short(value)}")
    for key, sub in spec.items():
        optional = key.endswith("?")
        key = key.rstrip("?")
        where = f"{path}.{key}" if path else key
        if key not in value:
            if optional:
                continue
            raise ResultError(f"field {where!r} is missing")
        _check(value[key], sub, where)


def validate(data: Any) -> None:
    """Raise ``ResultError`` (one line naming the field) unless ``data`` is a valid ``vfeval.result/1``."""
    if not isinstance(data, dict):
        raise ResultError(f"a result must be a JSON object, got {_short(data)}")
    if data.get("schema") != SCHEMA:
        raise ResultError(f"field 'schema' is {_short(data.get('schema'))}, not {SCHEMA!r}")
    _check_values(data)
    _check(data, RESULT_FIELDS, "")
    for name, metric in data["metrics"].items():
        _check(metric, METRIC_FIELDS, f"metrics.{name}")
    for table, metrics in (data.get("breakdowns") or {}).items():
        _check(metrics, MAPPING, f"breakdowns.{table}")
        for name, metric in metrics.items():
            _check(metric, METRIC_FIELDS, f"breakdowns.{table}.{name}")
    task, protocol = data["task"], data["protocol"]
    for key, task_key in (("task", "name"), ("version", "version"), ("split", "split")):
        if protocol[key] != task[task_key]:
            raise ResultError(
                f"field 'protocol.{key}' ({_short(protocol[key])}) disagrees with 'task.{task_key}' "
                f"({_short(task[task_key])})"
            )
    expected = fingerprint({k: v for k, v in protocol.items() if k != "fingerprint"})
    if protocol["fingerprint"] != expected:
        raise ResultError(f"field 'protocol.fingerprint' does not match the protocol's fields (they hash to {expected})")
    if task["n_failed"] > task["n"]:
        raise ResultError("field 'task.n_failed' is larger than 'task.n'")
    if data["complete"] and (task["n_failed"] or task["limit"] is not None):
        raise ResultError("field 'complete' is true, but the run has failed samples or a limit")
    if data["scored"] and data["metrics"] and data["headline"] not in data["metrics"]:
        raise ResultError(f"field 'headline' names {_short(data['headline'])}, which is not in 'metrics'")


def load_result(path: str | Path) -> dict[str, Any]:
    """The validated result in the JSON file at ``path`` (a run folder means its results.json); every error is
    one line naming the file and the field."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultError(f"{path}: not found; pass a run folder written by `vfeval run` or its {RESULTS_FILE}") \
            from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultError(f"{path}: cannot read it ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise ResultError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    except RecursionError:
        raise ResultError(f"{path}: nested more than {MAX_DEPTH} levels deep; not a vfeval result") from None
    try:
        validate(data)
    except ResultError as exc:
        raise ResultError(f"{path}: {exc}") from exc
    return data


def _finite_or_none(value: Any) -> Any:
    return value if not isinstance(value, float) or math.isfinite(value) else None


def _metric_dict(metric: Metric) -> dict[str, Any]:
    """A metric as JSON: an undefined number (NaN: nothing was scored) is null, which JSON can hold."""
    d = metric.to_dict()
    d["value"] = _finite_or_none(d["value"])
    if d["ci95"] is not None:
        d["ci95"] = [_finite_or_none(x) for x in d["ci95"]]
    return d


# ---------------------------------------------------------------------------------------------------
# Writing


def scores_to_dict(scores: Scores) -> dict[str, Any]:
    return {
        "scored": scores.scored,
        "headline": scores.headline,
        "metrics": {k: _metric_dict(m) for k, m in scores.metrics.items()},
        "breakdowns": {b: {k: _metric_dict(m) for k, m in table.items()} for b, table in scores.breakdowns.items()},
        "notes": list(scores.notes),
    }


def build_result(
    *,
    run_name: str,
    config: dict[str, Any],
    protocol: dict[str, Any],
    pipeline: dict[str, Any],
    pipeline_fingerprint: str,
    family: str,
    results: list[SampleResult],
    scores: Scores,
    cost: dict[str, Any],
    plugins: dict[str, str],
    outputs: dict[str, str],
    limit: int | None,
    world_size: int = 1,
    training: dict[str, Any] | None = None,
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
        # The family names a leaderboard column, not a computation: recorded outside the fingerprint.
        # So does how the encoder's weights were trained (``Encoder.training``), when known.
        "pipeline": {**pipeline, "fingerprint": pipeline_fingerprint, "family": family,
                     **({"training": training} if training is not None else {})},
        **scores_to_dict(scores),
        "complete": not failed and limit is None,
        "failures": dict(sorted(reasons.items())),
        "cost": cost,
        "provenance": provenance(plugins, world_size),
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
    """Write ``samples.jsonl``, then ``results.json`` once ``result`` is valid (a writer's bug is refused here,
    with the samples kept for ``vfeval rescore``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps(s.to_dict(), ensure_ascii=False) for s in samples)
    _atomic_write(run_dir / SAMPLES_FILE, "\n".join(lines) + "\n")
    try:
        validate(result)
    except ResultError as exc:
        raise ResultError(f"{run_dir / RESULTS_FILE}: not written: {exc}") from exc
    _atomic_write(run_dir / RESULTS_FILE, json.dumps(result, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    return run_dir / RESULTS_FILE


def read_run(run_dir: str | Path) -> tuple[dict[str, Any], list[SampleResult]]:
    run_dir = Path(run_dir)
    res_path = run_dir / RESULTS_FILE if run_dir.is_dir() else run_dir
    if not res_path.is_file():
        raise UsageError(f"no {RESULTS_FILE} in {run_dir}; pass a run folder written by `vfeval run`")
    result = load_result(res_path)
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
        res = load_result(p)
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
