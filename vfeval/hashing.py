"""Stable hashes: of JSON-able data (``fingerprint``: protocols, pipelines, cache keys) and of files
(``sha256_file``: weights and data files named in fingerprints).

Every fingerprint in vfeval is made here, so that two places never hash the same thing two ways.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def fingerprint(data: Any) -> str:
    """A short stable hash of JSON-able data: the first 16 hex digits of the SHA-256 of its JSON with sorted
    keys (values JSON cannot hold are hashed as their ``str``)."""
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def sha256_file(path: str | Path, h: Any = None) -> Any:
    """``h`` (a new SHA-256 if None) updated with the bytes of the file at ``path``, read 1 MiB at a time;
    ``.hexdigest()`` names weights or data files in fingerprints."""
    h = h or hashlib.sha256()
    with open(Path(path).expanduser(), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h
