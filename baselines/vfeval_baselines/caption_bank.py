"""Caption banks: files of captions that ``retrieval`` (an encoder) and ``nearest-caption`` (an aggregator)
pick from, read and embedded the same way for both.

A bank is a file of captions:

- ``.jsonl``: one JSON value per line, a string or an object with a ``caption``, ``sentence`` or ``text`` key
  (``train/captions.jsonl`` written by ``vfeval data synthetic`` is one);
- ``.csv``: a header with a ``caption``, ``sentence`` or ``text`` column;
- anything else: plain text, one caption per line.

The sha256 of the file's bytes goes into the fingerprint of whatever uses the bank, so a changed bank never
reuses answers cached with the old one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vfeval.errors import UsageError
from vfeval.pipeline import _normalise

TEXT_KEYS = ("caption", "sentence", "text")
EMBED_CHUNK = 256
"""Bank captions embedded per ``embed_text`` call: always the same chunks, so the same bank embeddings."""
HINT = ("expected a .jsonl, .csv or text file of captions, e.g. DIR/train/captions.jsonl written by "
        "`vfeval data synthetic --out DIR`")


def _caption(value: Any, where: str) -> str:
    if isinstance(value, dict):
        key = next((k for k in TEXT_KEYS if isinstance(value.get(k), str)), None)
        if key is None:
            raise UsageError(f"{where} has none of the keys {', '.join(TEXT_KEYS)} with a string value")
        value = value[key]
    if not isinstance(value, str):
        raise UsageError(f"{where} must be a string or an object with a caption, not {type(value).__name__}")
    return value.strip()


def read_bank(path: Path, text: str) -> list[str]:
    """The non-empty captions of a bank file's ``text``, in file order."""
    if path.suffix.lower() == ".jsonl":
        captions = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UsageError(f"caption bank {path}: line {n} is not JSON: {exc.msg}") from exc
                captions.append(_caption(value, f"caption bank {path}: line {n}"))
    elif path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        column = next((k for k in TEXT_KEYS if k in (reader.fieldnames or [])), None)
        if column is None:
            raise UsageError(f"caption bank {path}: the header needs a {', '.join(TEXT_KEYS)} column; it has "
                             f"{', '.join(reader.fieldnames or []) or 'none'}")
        captions = [(row[column] or "").strip() for row in reader]
    else:
        captions = [line.strip() for line in text.splitlines()]
    return [c for c in captions if c]


def load_bank(path_str: str, key: str, split: str = "", distinct: bool = False) -> tuple[list[str], str]:
    """(captions in file order, sha256 of the file) of the bank the config key ``key`` names; each caption
    cut at ``split`` if given, and repeated captions dropped if ``distinct``. Problems name ``key``."""
    if not path_str:
        raise UsageError(f"config: missing value for {key!r}; {HINT}")
    path = Path(path_str).expanduser()
    if not path.is_file():
        raise UsageError(f"config: {key!r}: caption bank {path} not found; {HINT}")
    data = path.read_bytes()
    try:
        captions = read_bank(path, data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"caption bank {path} is not UTF-8 text: {exc.reason}") from exc
    if split:
        captions = [part.strip() for c in captions for part in c.split(split) if part.strip()]
    if distinct:
        captions = list(dict.fromkeys(captions))
    if not captions:
        raise UsageError(f"caption bank {path} holds no captions; {HINT}")
    return captions, hashlib.sha256(data).hexdigest()


def embed_bank(embed_text: Callable[[list[str]], np.ndarray], captions: list[str]) -> np.ndarray:
    """``float32 [B, D]`` unit rows, one per caption, embedded in fixed chunks of ``EMBED_CHUNK``."""
    parts = [np.asarray(embed_text(captions[i : i + EMBED_CHUNK]), dtype=np.float32)
             for i in range(0, len(captions), EMBED_CHUNK)]
    return _normalise(np.concatenate(parts))
