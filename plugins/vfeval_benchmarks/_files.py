"""Reading a benchmark's files under ``task.root``: paths, JSON and CSV, each problem a one-line UsageError.

Shared by the MSR-VTT and YouCook2 tasks. Light on purpose (standard library only): task modules are
imported when the plugin registers its tasks.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vfeval.errors import UsageError

SYNTHETIC_MARKER = "synthetic_events.json"
"""Written by `vfeval data synthetic` next to each benchmark's annotation files; never in a real one."""


def resolve_root(root: str) -> Path:
    """``task.root`` as a path; a config built in code (not through OmegaConf) may still hold ``${...}``."""
    text = str(root)
    if "${" in text:
        from omegaconf import OmegaConf

        text = str(OmegaConf.create({"root": text}).root)
    return Path(text).expanduser()


def under(root: Path, name: str) -> Path:
    """``name`` relative to ``root`` unless it is absolute."""
    path = Path(name).expanduser()
    return path if path.is_absolute() else root / path


def is_synthetic(root: Path) -> bool:
    return (root / SYNTHETIC_MARKER).exists()


def data_files(root: Path, files: dict[str, Path]) -> dict[str, Path]:
    """``files`` (by the config key naming each) and the synthetic marker, those that exist: what a task's
    ``data_files()`` returns, so that their hashes are part of its protocol."""
    files = {**files, "synthetic_events": root / SYNTHETIC_MARKER}
    return {label: path for label, path in files.items() if path.is_file()}


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from exc
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc


def read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """The rows of a CSV file with a header holding at least the ``required`` columns (extra ones are kept)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a byte-order mark is not a column
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            lacking = [c for c in required if c not in header]
            if lacking:
                raise UsageError(
                    f"{path}: the header must name the columns {', '.join(required)}; it has "
                    f"{', '.join(header) or 'none'} (missing {', '.join(lacking)})"
                )
            rows = []
            for line, row in enumerate(reader, start=2):
                if None in row or any(row[c] is None for c in required):
                    raise UsageError(f"{path}: line {line} does not have one value per column of the header")
                rows.append(row)
            return rows
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text: {exc.reason}") from exc
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc


def first_existing(candidates: Sequence[Path]) -> Path:
    """The first candidate that exists, else the first: a missing video becomes a failed sample that names it."""
    for path in candidates:
        if path.is_file():
            return path
    return candidates[0]


def missing_data(benchmark: str, root: Path, missing: Sequence[Path], expected: str, source: str,
                 fmt: str) -> UsageError:
    """The one error for absent benchmark files: what is missing, what is expected, where it comes from, and
    the synthetic alternative."""
    where = f"root {root} does not exist" if not root.exists() else f"missing {', '.join(map(str, missing))}"
    return UsageError(
        f"{benchmark} data not found ({where}); expected {expected}: {source}; for offline synthetic data run "
        f"`vfeval data synthetic --out DIR --formats {fmt}` and set task.root=DIR/{fmt}"
    )


def check_choice(key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise UsageError(f"config: bad value for 'task.{key}': {value!r}; use one of {', '.join(choices)}")
