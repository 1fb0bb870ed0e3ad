"""Leaderboard records: what ranks together, and the values each record shows.

A record is a run's ``results.json`` copied into ``leaderboard/results/``; it is read and validated by
``vfeval.results.load_result``, the owner of the ``vfeval.result/1`` schema. Records are grouped by their
protocol fingerprint (task, version, split, metric versions and options, e.g. ``data: synthetic``): only
records of one fingerprint share a ranking. A record is ranked when it is complete (no failed samples and
no ``limit``), scored, and has the protocol's headline metric; every other record is shown, with the reason
it is not ranked.

Everything shown comes from the record itself, so the site is a function of the results folder alone (no
plugin needs to be installed to build it): the pipeline family is the record's ``pipeline.family`` (written
by the runner from the plugins' specs; a record without one is shown under "other", whatever its plugin
names), and the backend is ``pipeline.encoder.backend``.
"""

from __future__ import annotations

import math
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vfeval.errors import UsageError
from vfeval.results import RESULTS_FILE, SAMPLES_FILE, load_result

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
"""Family id → label of the families the landing page knows, in the order it shows them; a record may name
another family (a plugin's own), shown with its id as the label."""


def family_label(family: str) -> str:
    return FAMILIES.get(family, family)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


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
        """The record's ``pipeline.family``; "other" for records written before families were recorded."""
        return self.data["pipeline"].get("family") or "other"

    @property
    def family_label(self) -> str:
        return family_label(self.family)

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
    def training_stages(self) -> list[dict[str, Any]] | None:
        """The stages of ``pipeline.training`` (what the encoder reported of its trainer's summary): a list,
        empty for random weights; None when the record says nothing about training."""
        training = self.data["pipeline"].get("training")
        stages = training.get("stages") if isinstance(training, dict) else None
        return [st for st in stages if isinstance(st, dict)] if isinstance(stages, list) else None

    def training_label(self, key: str) -> str:
        """One fact of every training stage, in order (``objective``, ``masking``, ``trainer``, ...), joined by
        arrows; "random init" when there are no stages; "" when the record says nothing about training."""
        stages = self.training_stages
        if stages is None:
            return ""
        if not stages:
            return "random init"
        return " → ".join(str(st.get(key, "?")) for st in stages)

    @property
    def training_steps(self) -> int | None:
        """Optimizer steps of all stages together (0 for random weights); None when unknown."""
        stages = self.training_stages
        if stages is None or any(not _is_int(st.get("steps")) for st in stages):
            return None
        return sum(st["steps"] for st in stages)

    @property
    def parameters(self) -> int | None:
        enc = self.data["pipeline"]["encoder"]
        for value in (enc.get("parameters"), self.encoder_config.get("parameters")):
            if _is_int(value):
                return value
        return None

    @property
    def backend(self) -> str:
        """``pipeline.encoder.backend`` ("" for records written before the backend was recorded)."""
        return self.data["pipeline"]["encoder"].get("backend") or ""

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
    return [Record(load_result(p), p) for p in sorted(folder.glob("*.json"))]


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
    data = load_result(src)
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
                "rank": r.rank, "run": r.run, "family": r.family_label, "encoder": r.encoder,
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
