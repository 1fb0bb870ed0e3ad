"""Leaderboard records: validation of ``vfeval.result/1``, pipeline families, and what ranks together.

A record is a run's ``results.json`` copied into ``leaderboard/results/``. Records are grouped by their
protocol fingerprint (task, version, split, metric versions and options, e.g. ``data: synthetic``): only
records of one fingerprint share a ranking. A record is ranked when it is complete (no failed samples and
no ``limit``), scored, and has the protocol's headline metric; every other record is shown, with the reason
it is not ranked.

Pipeline families (the landing page's columns) are derived from the record by this rule, first match wins:

1. aggregator ``random``, ``blind`` or ``constant`` → non-learned baselines (they never use what a learned
   encoder saw in the video);
2. aggregator ``llm`` (or a name starting ``llm-``) → LLM over segments;
3. encoder ``videofirst`` → video-first;
4. encoder ``hf-clip`` → image-first;
5. encoder ``pixel`` or ``hashed-text`` → non-learned baselines;
6. anything else → other.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vfeval.errors import UsageError
from vfeval.results import RESULTS_FILE, SAMPLES_FILE, SCHEMA
from vfeval.task import fingerprint

SAMPLES_SUFFIX = ".samples.jsonl"
MAX_SAMPLES_BYTES = 1_000_000
"""Samples files larger than this are not copied next to a record (the results folder is committed)."""

FAMILIES = {
    "video-first": "video-first",
    "llm-over-segments": "LLM over segments",
    "image-first": "image-first",
    "baseline": "non-learned baselines",
    "other": "other",
}
"""Family id → label, in the order the landing page shows them."""
BASELINE_AGGREGATORS = frozenset({"random", "blind", "constant"})
BASELINE_ENCODERS = frozenset({"pixel", "hashed-text"})
VIDEO_FIRST_ENCODERS = frozenset({"videofirst"})
IMAGE_FIRST_ENCODERS = frozenset({"hf-clip"})


class RecordError(UsageError):
    """A record that does not follow ``vfeval.result/1``; the message names the field."""


# ---------------------------------------------------------------------------------------------------
# The validator: required fields and their types


@dataclass(frozen=True)
class Kind:
    what: str
    test: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


TEXT = Kind("a string", lambda v: isinstance(v, str))
NAME = Kind("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip()))
COUNT = Kind("a non-negative integer", lambda v: _is_int(v) and v >= 0)
BOOL = Kind("true or false", lambda v: isinstance(v, bool))
NUMBER = Kind("a number", _is_number)
MAPPING = Kind("an object", lambda v: isinstance(v, dict))
LIST = Kind("a list", lambda v: isinstance(v, list))
LIMIT = Kind("null or a positive integer", lambda v: v is None or (_is_int(v) and v > 0))
CI = Kind("null or a list of two numbers", lambda v: v is None or (
    isinstance(v, list) and len(v) == 2 and all(x is None or _is_number(x) for x in v)))
MAYBE_COUNT = Kind("null or a non-negative integer", lambda v: v is None or (_is_int(v) and v >= 0))

# Keys ending in "?" are optional. A nested dict is an object with those fields.
RESULT_FIELDS: dict[str, Any] = {
    "schema": TEXT,
    "run": {"name": NAME, "config": MAPPING},
    "task": {"name": NAME, "version": TEXT, "split": TEXT, "n": COUNT, "n_failed": COUNT, "limit": LIMIT},
    "protocol": {"task": NAME, "version": TEXT, "split": TEXT, "metric_versions": MAPPING, "options": MAPPING,
                 "fingerprint": NAME},
    "pipeline": {"encoder": {"name": NAME}, "aggregator": {"name": NAME}, "sampling": MAPPING,
                 "fingerprint": NAME},
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
METRIC_FIELDS: dict[str, Any] = {"value": NUMBER, "ci95?": CI, "n?": MAYBE_COUNT, "higher_is_better?": BOOL}


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _check(value: Any, spec: Any, path: str) -> None:
    if isinstance(spec, Kind):
        if not spec.test(value):
            raise RecordError(f"field {path!r} must be {spec.what}, got {_short(value)}")
        return
    if not isinstance(value, dict):
        raise RecordError(f"field {path!r} must be an object, got {_short(value)}")
    for key, sub in spec.items():
        optional = key.endswith("?")
        key = key.rstrip("?")
        where = f"{path}.{key}" if path else key
        if key not in value:
            if optional:
                continue
            raise RecordError(f"field {where!r} is missing")
        _check(value[key], sub, where)


def validate(data: Any) -> None:
    """Raise ``RecordError`` (one line naming the field) unless ``data`` is a valid ``vfeval.result/1``."""
    if not isinstance(data, dict):
        raise RecordError(f"a record must be a JSON object, got {_short(data)}")
    if "schema" in data and data["schema"] != SCHEMA:
        raise RecordError(f"field 'schema' is {_short(data['schema'])}, not {SCHEMA!r}")
    _check(data, RESULT_FIELDS, "")
    for name, metric in data["metrics"].items():
        _check(metric, METRIC_FIELDS, f"metrics.{name}")
    task, protocol = data["task"], data["protocol"]
    for key, task_key in (("task", "name"), ("version", "version"), ("split", "split")):
        if protocol[key] != task[task_key]:
            raise RecordError(
                f"field 'protocol.{key}' ({_short(protocol[key])}) disagrees with 'task.{task_key}' "
                f"({_short(task[task_key])})"
            )
    expected = fingerprint({k: v for k, v in protocol.items() if k != "fingerprint"})
    if protocol["fingerprint"] != expected:
        raise RecordError(f"field 'protocol.fingerprint' does not match the protocol's fields (they hash to {expected})")
    if task["n_failed"] > task["n"]:
        raise RecordError("field 'task.n_failed' is larger than 'task.n'")
    if data["complete"] and (task["n_failed"] or task["limit"] is not None):
        raise RecordError("field 'complete' is true, but the run has failed samples or a limit")
    if data["scored"] and data["metrics"] and data["headline"] not in data["metrics"]:
        raise RecordError(f"field 'headline' names {_short(data['headline'])}, which is not in 'metrics'")


def read_record(path: Path) -> dict[str, Any]:
    """A validated record from a JSON file; errors name the file and the field."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: cannot read it ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    try:
        validate(data)
    except RecordError as exc:
        raise RecordError(f"{path}: {exc}") from exc
    return data


# ---------------------------------------------------------------------------------------------------
# One record, with the values the leaderboard shows


def safe_name(text: str, limit: int = 100) -> str:
    """A file-name-safe form of ``text``: letters, digits, dot, dash and underscore only."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"
    return cleaned[:limit]


def record_stem(data: dict[str, Any]) -> str:
    """``<task>-<split>-<run>-<pipeline fingerprint>``; the run name is not repeated when it already starts
    with ``<task>-<split>-`` (as default run names do)."""
    task, split, run = data["task"]["name"], data["task"]["split"], data["run"]["name"]
    prefix = f"{task}-{split}-"
    name = run if run.startswith(prefix) else prefix + run
    return safe_name(f"{name}-{data['pipeline']['fingerprint']}", 160)


def family_of(encoder: str, aggregator: str) -> str:
    """The pipeline family id (see the module docstring for the rule)."""
    if aggregator in BASELINE_AGGREGATORS:
        return "baseline"
    if aggregator == "llm" or aggregator.startswith("llm-"):
        return "llm-over-segments"
    if encoder in VIDEO_FIRST_ENCODERS:
        return "video-first"
    if encoder in IMAGE_FIRST_ENCODERS:
        return "image-first"
    if encoder in BASELINE_ENCODERS:
        return "baseline"
    return "other"


def _finite(v: Any) -> bool:
    return _is_number(v) and math.isfinite(v)


@dataclass
class Record:
    data: dict[str, Any]
    path: Path | None = None
    rank: int | None = None
    unranked_reason: str = ""

    @property
    def stem(self) -> str:
        return self.path.stem if self.path is not None else record_stem(self.data)

    @property
    def run(self) -> str:
        return self.data["run"]["name"]

    @property
    def task(self) -> str:
        return self.data["task"]["name"]

    @property
    def split(self) -> str:
        return self.data["task"]["split"]

    @property
    def protocol(self) -> str:
        return self.data["protocol"]["fingerprint"]

    @property
    def encoder(self) -> str:
        return self.data["pipeline"]["encoder"]["name"]

    @property
    def encoder_config(self) -> dict[str, Any]:
        cfg = self.data["pipeline"]["encoder"].get("config")
        return cfg if isinstance(cfg, dict) else {}

    @property
    def aggregator(self) -> str:
        return self.data["pipeline"]["aggregator"]["name"]

    @property
    def family(self) -> str:
        return family_of(self.encoder, self.aggregator)

    @property
    def synthetic(self) -> bool:
        return self.data["protocol"]["options"].get("data") == "synthetic"

    @property
    def sampling(self) -> dict[str, Any]:
        return self.data["pipeline"]["sampling"]

    @property
    def frames(self) -> int | None:
        """Frames per video when the sampling fixes them (uniform, one window); else None."""
        s = self.sampling
        if s.get("mode") == "uniform" and s.get("segments") is None and _is_int(s.get("num_frames")):
            return s["num_frames"]
        return None

    @property
    def frames_label(self) -> str:
        s = self.sampling
        if s.get("mode") == "fps":
            label = f"{s.get('fps')} fps, at most {s.get('max_frames')}"
        else:
            label = str(s.get("num_frames", "?"))
        if s.get("segments") is not None:
            label += f" per {s['segments']} s segment"
        return label

    @property
    def sampling_label(self) -> str:
        s = self.sampling
        size = f" {s['crop']}px" if s.get("crop") else (f" {s['size']}px" if s.get("size") else "")
        segs = f", {s['segments']} s segments" if s.get("segments") is not None else ""
        return f"{s.get('mode', '?')}{size}{segs}"

    @property
    def masking(self) -> str:
        cfg = self.encoder_config
        ratio = cfg.get("mask_ratio")
        if not _is_number(ratio):
            return ""
        if ratio == 0:
            return "none"
        when = "training and evaluation" if cfg.get("mask_at_eval") else "training"
        return f"{cfg.get('mask', 'mask')} {ratio:.0%} ({when})"

    @property
    def parameters(self) -> int | None:
        enc = self.data["pipeline"]["encoder"]
        for value in (enc.get("parameters"), self.encoder_config.get("parameters")):
            if _is_int(value):
                return value
        return None

    @property
    def backend(self) -> str:
        enc = self.data["pipeline"]["encoder"]
        for value in (enc.get("backend"), self.encoder_config.get("backend")):
            if isinstance(value, str) and value:
                return value
        return ""

    @property
    def headline(self) -> str:
        return self.data["headline"]

    def metric(self, name: str | None = None) -> dict[str, Any] | None:
        return self.data["metrics"].get(name or self.headline)

    @property
    def value(self) -> float | None:
        m = self.metric()
        return m["value"] if m is not None and _finite(m["value"]) else None

    @property
    def ci(self) -> tuple[float, float] | None:
        m = self.metric()
        ci = m.get("ci95") if m else None
        return (ci[0], ci[1]) if ci and _finite(ci[0]) and _finite(ci[1]) else None

    @property
    def higher_is_better(self) -> bool:
        m = self.metric()
        return bool(m.get("higher_is_better", True)) if m else True

    @property
    def n(self) -> int:
        return self.data["task"]["n"]

    @property
    def n_failed(self) -> int:
        return self.data["task"]["n_failed"]

    def cost(self, key: str) -> float | None:
        v = self.data["cost"].get(key)
        return v if _finite(v) else None

    def not_rankable(self, headline: str) -> str:
        """Why this record cannot rank under a protocol whose headline metric is ``headline`` ('' if it can)."""
        task = self.data["task"]
        if not self.data["scored"]:
            return "not scored offline"
        if task["limit"] is not None:
            return f"limited to {task['limit']} samples"
        if task["n_failed"] or not self.data["complete"]:
            return f"incomplete: {task['n_failed']} failed samples"
        if self.headline != headline:
            return f"headline metric {self.headline!r}, not {headline!r}"
        if self.value is None:
            return "no headline value"
        return ""


@dataclass
class Protocol:
    """Records that share one protocol fingerprint, ranked by the headline metric."""

    fingerprint: str
    fields: dict[str, Any]
    records: list[Record] = field(default_factory=list)
    headline: str = ""

    @property
    def task(self) -> str:
        return self.fields["task"]

    @property
    def split(self) -> str:
        return self.fields["split"]

    @property
    def synthetic(self) -> bool:
        return self.fields.get("options", {}).get("data") == "synthetic"

    @property
    def slug(self) -> str:
        return safe_name(f"{self.task}-{self.split}-{self.fingerprint}")

    @property
    def ranked(self) -> list[Record]:
        return [r for r in self.records if r.rank is not None]


def rank(records: list[Record]) -> list[Protocol]:
    """Group records by protocol fingerprint and rank each group (ties share a rank: 1, 2, 2, 4)."""
    groups: dict[str, Protocol] = {}
    for rec in records:
        proto = rec.data["protocol"]
        fields = {k: v for k, v in proto.items() if k != "fingerprint"}
        groups.setdefault(rec.protocol, Protocol(rec.protocol, fields)).records.append(rec)
    for group in groups.values():
        scored = [r.headline for r in group.records if r.data["scored"] and r.headline]
        group.headline = Counter(scored).most_common(1)[0][0] if scored else ""
        eligible = []
        for rec in group.records:
            rec.unranked_reason = rec.not_rankable(group.headline)
            rec.rank = None
            if not rec.unranked_reason:
                eligible.append(rec)
        sign = -1 if not eligible or eligible[0].higher_is_better else 1
        eligible.sort(key=lambda r: (sign * (r.value or 0.0), r.run))
        previous = None
        for i, rec in enumerate(eligible):
            rec.rank = previous.rank if previous is not None and previous.value == rec.value else i + 1
            previous = rec
        group.records.sort(key=lambda r: (r.rank is None, r.rank or 0, r.run, r.stem))
    return sorted(groups.values(), key=lambda g: (g.task, g.split, g.synthetic, g.fingerprint))


# ---------------------------------------------------------------------------------------------------
# The results folder


def load_records(results_dir: str | Path) -> list[Record]:
    """Every record (``*.json``) directly in ``results_dir``, validated; a bad one is refused by name."""
    folder = Path(results_dir)
    if not folder.is_dir():
        raise UsageError(f"results folder not found: {folder} (add runs with `vfeval leaderboard add runs/NAME`)")
    return [Record(read_record(p), p) for p in sorted(folder.glob("*.json"))]


@dataclass
class Added:
    path: Path
    samples: Path | None
    notes: list[str]


def add_run(
    run: str | Path, results_dir: str | Path, *, replace: bool = False, max_samples_bytes: int = MAX_SAMPLES_BYTES
) -> Added:
    """Validate a run's results.json and copy it into ``results_dir`` as ``<task>-<split>-<run>-<fp>.json``.

    Its samples file is copied next to it (``<stem>.samples.jsonl``) when it is at most ``max_samples_bytes``.
    ``replace`` removes the records of earlier pipelines with the same task, split and run name.
    """
    run = Path(run)
    src = run / RESULTS_FILE if run.is_dir() else run
    if not src.is_file():
        raise UsageError(f"no {RESULTS_FILE} in {run}; pass a run folder written by `vfeval run`")
    data = read_record(src)
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = record_stem(data)
    dest = out / f"{stem}.json"
    notes: list[str] = []
    if replace:
        for old in load_records(out):
            same = (old.task, old.split, old.run) == (data["task"]["name"], data["task"]["split"], data["run"]["name"])
            if same and old.path is not None and old.path != dest:
                old.path.unlink()
                old.path.with_name(old.path.stem + SAMPLES_SUFFIX).unlink(missing_ok=True)
                notes.append(f"replaced {old.path.name}")
    shutil.copyfile(src, dest)
    samples_src = src.parent / data.get("samples", SAMPLES_FILE)
    samples_dest = out / f"{stem}{SAMPLES_SUFFIX}"
    copied = None
    if samples_src.is_file() and samples_src.stat().st_size <= max_samples_bytes:
        shutil.copyfile(samples_src, samples_dest)
        copied = samples_dest
    else:
        samples_dest.unlink(missing_ok=True)
        if samples_src.is_file():
            notes.append(f"samples not copied: {samples_src.stat().st_size / 1e6:.1f} MB is over the "
                         f"{max_samples_bytes / 1e6:.1f} MB limit")
    return Added(dest, copied, notes)


def samples_of(rec: Record) -> Path | None:
    if rec.path is None:
        return None
    path = rec.path.with_name(rec.path.stem + SAMPLES_SUFFIX)
    return path if path.is_file() else None


def table(records: list[Record]) -> Any:
    """One row per record, ranked within its protocol (pandas DataFrame)."""
    import pandas as pd

    rows = []
    for group in rank(records):
        for r in group.records:
            rows.append({
                "task": r.task, "split": r.split, "protocol": r.protocol,
                "data": "synthetic" if r.synthetic else "real",
                "rank": r.rank, "run": r.run, "family": FAMILIES[r.family], "encoder": r.encoder,
                "aggregator": r.aggregator, "frames": r.frames_label, "masking": r.masking,
                "metric": r.headline, "value": r.value,
                "ci_low": r.ci[0] if r.ci else None, "ci_high": r.ci[1] if r.ci else None,
                "n": r.n, "failed": r.n_failed, "ranked": r.rank is not None, "note": r.unranked_reason,
            })
    df = pd.DataFrame(rows)
    if not df.empty:
        df["rank"] = df["rank"].astype("Int64")
    return df


def to_markdown(df: Any) -> str:
    """A GitHub-flavoured markdown table of a DataFrame (no extra dependency)."""
    import pandas as pd

    def cell(v: Any) -> str:
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            return ""
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)
