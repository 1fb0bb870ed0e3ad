"""Durable caches in one SQLite file: answers to requests, and per-window features (the feature store).

- ``answers``: keyed by (pipeline fingerprint, request key). Each batch is committed as soon as it is
  answered, so a run killed at any moment (even ``kill -9``) resumes where it stopped. SQLite's WAL mode lets
  several processes share the file.
- ``features``: keyed by (features key, video window): the per-segment embeddings or captions of one video
  window under one encoder and sampling. Every task and aggregator that asks for the same window with the same
  encoder weights and sampling reuses them instead of decoding and encoding again.
- ``file_digests``: the content identity of each video file (``vfeval.content``), hashed once per (path, size,
  mtime). The runner puts it into every key that depends on a video's content, so a replaced video is never
  answered from the cache.
- ``answered_content``: the identity each video file had when a pipeline last answered about it; only to say
  how many windows a changed file invalidated.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vfeval.content import ContentIndex
from vfeval.requests import decode_answer, encode_answer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    pipeline TEXT NOT NULL, key TEXT NOT NULL, ok INTEGER NOT NULL, value TEXT, error TEXT,
    extra TEXT, created REAL, PRIMARY KEY (pipeline, key));
CREATE TABLE IF NOT EXISTS features (
    fkey TEXT NOT NULL, window TEXT NOT NULL, embeddings BLOB, captions TEXT, times TEXT, frame_times TEXT,
    created REAL, PRIMARY KEY (fkey, window));
CREATE TABLE IF NOT EXISTS answered_content (
    pipeline TEXT NOT NULL, path TEXT NOT NULL, content TEXT NOT NULL, PRIMARY KEY (pipeline, path));
"""


@dataclass
class Entry:
    ok: bool
    value: Any = None
    error: str | None = None
    extra: dict | None = None


def _array_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


class Cache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=120, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self.content = ContentIndex(self.db)
        """Content identities of video files, remembered in this file."""

    def close(self) -> None:
        self.db.close()

    # -- answers ----------------------------------------------------------------------------------
    def get_answers(self, pipeline: str, keys: list[str]) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT key, ok, value, error, extra FROM answers WHERE pipeline=? AND key IN ({marks})",
                [pipeline, *chunk],
            )
            for key, ok, value, error, extra in rows:
                out[key] = Entry(bool(ok), decode_answer(json.loads(value)) if value is not None else None, error,
                                 json.loads(extra) if extra else None)
        return out

    def put_answers(self, pipeline: str, entries: dict[str, Entry]) -> None:
        now = time.time()
        rows = [
            (pipeline, key, int(e.ok), None if not e.ok else json.dumps(encode_answer(e.value)), e.error,
             json.dumps(e.extra) if e.extra else None, now)
            for key, e in entries.items()
        ]
        with self.db:  # one transaction per batch: durable once this returns
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO answers VALUES (?,?,?,?,?,?,?)", rows)

    # -- features ---------------------------------------------------------------------------------
    def get_features(self, fkey: str, window: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT embeddings, captions, times, frame_times FROM features WHERE fkey=? AND window=?", (fkey, window)
        ).fetchone()
        if row is None:
            return None
        emb, captions, times, frame_times = row
        return {
            "embeddings": None if emb is None else np.load(io.BytesIO(emb), allow_pickle=False),
            "captions": None if captions is None else json.loads(captions),
            "times": [tuple(t) for t in json.loads(times)],
            "frame_times": json.loads(frame_times),
        }

    def put_features(self, fkey: str, items: list[tuple[str, Any]]) -> None:
        now = time.time()
        rows = [
            (fkey, window, None if inp.embeddings is None else _array_bytes(np.asarray(inp.embeddings, np.float32)),
             None if inp.captions is None else json.dumps(inp.captions), json.dumps(inp.times),
             json.dumps(inp.frame_times), now)
            for window, inp in items
        ]
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO features VALUES (?,?,?,?,?,?,?)", rows)

    # -- what content each file had when last answered --------------------------------------------
    def answered_content(self, pipeline: str, paths: list[str]) -> dict[str, str]:
        """``{absolute path: identity}`` each file had when ``pipeline`` last answered about it."""
        out: dict[str, str] = {}
        for i in range(0, len(paths), 500):
            chunk = paths[i : i + 500]
            rows = self.db.execute(
                f"SELECT path, content FROM answered_content WHERE pipeline=? AND path IN ({','.join('?' * len(chunk))})",
                [pipeline, *chunk],
            )
            out.update(dict(rows))
        return out

    def put_answered_content(self, pipeline: str, contents: dict[str, str]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO answered_content VALUES (?,?,?)",
                                [(pipeline, path, content) for path, content in contents.items()])

    # -- maintenance ------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        n_answers = self.db.execute("SELECT COUNT(*), COUNT(DISTINCT pipeline) FROM answers").fetchone()
        n_feats = self.db.execute("SELECT COUNT(*), COUNT(DISTINCT fkey) FROM features").fetchone()
        return {
            "path": str(self.path),
            "bytes": self.path.stat().st_size if self.path.exists() else 0,
            "answers": n_answers[0], "pipelines": n_answers[1],
            "feature_windows": n_feats[0], "feature_sets": n_feats[1],
            "files_hashed": self.db.execute("SELECT COUNT(*) FROM file_digests").fetchone()[0],
        }

    def clear(self) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM answers")
            self.db.execute("DELETE FROM features")
            self.db.execute("DELETE FROM answered_content")
            self.db.execute("DELETE FROM file_digests")
        self.db.execute("VACUUM")
