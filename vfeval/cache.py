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

A run over several processes (``vfeval.distributed``) gives each rank a file of its own,
``<cache_dir>/shards/rank-K-of-N.sqlite``, so no file is written by two machines and no lock is shared across
them. Every run reads all the files of its cache folder (``open_cache``): its own first, then
``vfeval.sqlite`` and every shard, so a run at any world size, or one process, finds every answer and every
window's features any earlier run committed, whichever rank computed them.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vfeval.content import ContentIndex
from vfeval.errors import UsageError
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


MAIN_FILE = "vfeval.sqlite"
SHARDS = "shards"


def shard_path(cache_dir: str | Path, rank: int, world: int) -> Path:
    """The file rank ``rank`` of a ``world``-process run writes (one process writes ``vfeval.sqlite``)."""
    if world <= 1:
        return Path(cache_dir) / MAIN_FILE
    return Path(cache_dir) / SHARDS / f"rank-{rank}-of-{world}.sqlite"


def cache_files(cache_dir: str | Path) -> list[Path]:
    """Every answer file in a cache folder: ``vfeval.sqlite``, then the shards by name."""
    folder = Path(cache_dir)
    main = [folder / MAIN_FILE] if (folder / MAIN_FILE).is_file() else []
    shards = sorted((folder / SHARDS).glob("*.sqlite")) if (folder / SHARDS).is_dir() else []
    return main + shards


def remove_shards(cache_dir: str | Path) -> int:
    """Delete every shard of a cache folder (``vfeval cache clear``: a cleared cache answers nothing, whichever
    world size wrote it). Returns how many shard files there were."""
    folder = Path(cache_dir) / SHARDS
    files = sorted(folder.glob("*.sqlite")) if folder.is_dir() else []
    for path in files:
        for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            part.unlink(missing_ok=True)
    return len(files)


def open_cache(cache_dir: str | Path, rank: int = 0, world: int = 1) -> Cache:
    """The cache a run's rank writes (``shard_path``), reading every other file of the folder as well."""
    return Cache(shard_path(cache_dir, rank, world), read_also=cache_files(cache_dir))


class Cache:
    def __init__(self, path: str | Path, read_also: Iterable[str | Path] = ()) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=120, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self.content = ContentIndex(self.db)
        """Content identities of video files, remembered in this file."""
        own = self.path.resolve()
        self.others = [Path(p) for p in dict.fromkeys(read_also) if Path(p).resolve() != own]
        """Files read but never written (other ranks' shards, other world sizes' runs), after this one."""
        self._readers: list[sqlite3.Connection] | None = None

    def close(self) -> None:
        self.db.close()
        for con in self._readers or []:
            con.close()
        self._readers = None

    def _dbs(self) -> list[sqlite3.Connection]:
        """This file's connection, then one per other file (opened on first use, only ever read)."""
        if self._readers is None:
            self._readers = []
            for path in self.others:
                try:
                    con = sqlite3.connect(path, timeout=120, isolation_level=None)
                    con.execute("PRAGMA query_only=1")
                    tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                except sqlite3.Error as exc:
                    raise UsageError(f"cache file {path} cannot be read ({exc}); move it out of the cache folder "
                                     "or restore it") from exc
                if not {"answers", "features", "answered_content"} <= tables:  # a rank creating its file now
                    con.close()
                    continue
                self._readers.append(con)
        return [self.db, *self._readers]

    # -- answers ----------------------------------------------------------------------------------
    def get_answers(self, pipeline: str, keys: list[str]) -> dict[str, Entry]:
        """The stored answers among ``keys``; where several files hold one, the latest committed wins (a
        sample retried with ``--retry-failed`` at another world size replaces its failure)."""
        out: dict[str, Entry] = {}
        when: dict[str, float] = {}
        for db in self._dbs():
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT key, ok, value, error, extra, created FROM answers WHERE pipeline=? AND key IN ({marks})",
                    [pipeline, *chunk],
                )
                for key, ok, value, error, extra, created in rows:
                    if key in when and when[key] >= (created or 0.0):
                        continue
                    when[key] = created or 0.0
                    out[key] = Entry(bool(ok), decode_answer(json.loads(value)) if value is not None else None,
                                     error, json.loads(extra) if extra else None)
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
        row = None
        for db in self._dbs():
            row = db.execute(
                "SELECT embeddings, captions, times, frame_times FROM features WHERE fkey=? AND window=?",
                (fkey, window),
            ).fetchone()
            if row is not None:
                break
        if row is None:
            return None
        emb, captions, times, frame_times = row
        return {
            "embeddings": None if emb is None else np.load(io.BytesIO(emb), allow_pickle=False),
            "captions": None if captions is None else json.loads(captions),
            "times": [tuple(t) for t in json.loads(times)],
            "frame_times": json.loads(frame_times),
        }

    def has_features(self, fkey: str, windows: list[str]) -> set[str]:
        """Which of ``windows`` the store holds features of (in any file), without loading them."""
        found: set[str] = set()
        for db in self._dbs():
            for i in range(0, len(windows), 500):
                chunk = windows[i : i + 500]
                rows = db.execute(
                    f"SELECT window FROM features WHERE fkey=? AND window IN ({','.join('?' * len(chunk))})",
                    [fkey, *chunk],
                )
                found.update(w for (w,) in rows)
        return found

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
        for db in reversed(self._dbs()):  # this file's record wins over the others'
            for i in range(0, len(paths), 500):
                chunk = paths[i : i + 500]
                rows = db.execute(
                    f"SELECT path, content FROM answered_content WHERE pipeline=? AND path IN "
                    f"({','.join('?' * len(chunk))})",
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
