"""The identity of a file's content, cheap to ask again: what lets a cache tell a replaced video from the one
it answered, and a result name the task files it was scored against.

    index = ContentIndex(sqlite3.connect(".vfeval_cache/vfeval.sqlite", isolation_level=None))
    ids = index.identify(["videos/a.mp4", "videos/b.mp4"])   # {"videos/a.mp4": "sha256:9f86d0...", ...}

An identity is ``"sha256:<hex>"``, the SHA-256 of the whole file. Hashing a file is done once: the digest is
remembered in a SQLite table (next to the answer cache, in the same file) under the file's absolute path with its
size and modification time in nanoseconds, and asking again costs one ``stat`` and a lookup. A file whose
size or mtime changed is hashed again. A relative path is made absolute, nothing is resolved: resolving every
link of every path costs far more than the ``stat`` (a symlink is hashed under its own name, as the file it
points to).

Why the whole file and not a sample of its chunks (say the first, middle and last MiB): a video fixed in place
(a repaired byte range, a re-muxed stream of the same size) can differ only between the sampled chunks, and a
cache that misses that answers from the old file, which is the failure this module exists to prevent. The
price is measured by ``bench/cache.py``: SHA-256 runs at about 1 GB/s on one core (hashed in a few threads),
a small fraction of what decoding the same files costs, and paid once per file.

A digest is remembered only when the file's mtime is at least ``RACY_SECONDS`` older than the moment hashing
began. A file rewritten within the same timestamp tick as it was hashed (filesystems with coarse clocks) could
otherwise keep its size and mtime with new content; such a file is simply hashed again next time (git's
"racily clean" rule). What no stat can see: a file replaced by another of the same size with its mtime set
back to the old one's (``cp -p`` or ``rsync -t`` of such a file); ``vfeval cache clear`` forgets every digest.

Files that cannot be hashed get an identity that says why (``"missing"``, ``"unreadable: <reason>"``,
``"not a regular file"``: a FIFO or a device is never read here, as reading it may block), so a cached failure
is reused only while the file stays so, and recomputed once a regular file takes its place.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from vfeval.hashing import sha256_file

RACY_SECONDS = 2.0
MISSING = "missing"
NOT_A_FILE = "not a regular file"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS file_digests (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, digest TEXT NOT NULL, hashed REAL);
"""


def file_digest(path: str | Path) -> str:
    """``"sha256:<hex>"`` of the bytes of the file at ``path`` (raises OSError if it cannot be read).

    hashlib releases the GIL on large buffers, so threads hash several files in parallel."""
    return "sha256:" + sha256_file(path).hexdigest()


def file_hashes(files: Mapping[str, str | Path]) -> dict[str, str]:
    """``{label: "sha256:<hex>"}`` of task files (annotations, answers, event lists), for a protocol record.

    Every file must exist: a task lists only the files it reads.
    """
    return {label: file_digest(Path(path)) for label, path in sorted(files.items())}


@dataclass
class IdentityStats:
    files: int = 0
    """Distinct files asked about."""
    hashed: int = 0
    """Files read and hashed (new, changed, or too recently modified to be remembered)."""
    bytes_hashed: int = 0
    seconds: float = 0.0
    """Wall time of ``identify`` calls, stat and lookups included."""


class ContentIndex:
    """Content identities of files, each hashed once per (absolute path, size, mtime). ``db`` is a connection
    in autocommit mode (``isolation_level=None``), as the cache's."""

    def __init__(self, db: sqlite3.Connection, workers: int | None = None) -> None:
        self.db = db
        self.db.executescript(_SCHEMA)
        self.workers = workers or min(8, os.cpu_count() or 1)
        self.stats = IdentityStats()

    def identify(self, paths: Iterable[str]) -> dict[str, str]:
        """``{path: identity}`` for each distinct path (as given; made absolute for the memo)."""
        start = time.perf_counter()
        began_ns = time.time_ns()
        out: dict[str, str] = {}
        probes: dict[str, tuple[str, int, int]] = {}  # path -> (absolute path, size, mtime_ns)
        sep, regular = os.sep, stat.S_IFREG
        for path in dict.fromkeys(paths):
            # Task paths are absolute already; normalising them would cost as much as the stat.
            absolute = path if path[:1] == sep else os.path.abspath(path)
            try:
                st = os.stat(absolute)
            except FileNotFoundError:
                out[path] = MISSING
                continue
            except OSError as exc:
                out[path] = f"unreadable: {exc.strerror or type(exc).__name__}"
                continue
            if stat.S_IFMT(st.st_mode) != regular:  # a FIFO or device: reading it may block forever
                out[path] = NOT_A_FILE
                continue
            probes[path] = (absolute, st.st_size, st.st_mtime_ns)
        known = self._lookup([probe[0] for probe in probes.values()])
        todo: dict[str, tuple[str, int, int]] = {}
        for path, probe in probes.items():
            digest = known.get(probe)
            if digest is None:
                todo[path] = probe
            else:
                out[path] = digest
        if todo:
            self._hash(todo, out, began_ns)
        self.stats.files += len(out)
        self.stats.seconds += time.perf_counter() - start
        return out

    def _lookup(self, absolutes: list[str]) -> dict[tuple[str, int, int], str]:
        """``{(absolute path, size, mtime_ns): digest}`` remembered for these paths."""
        found: dict[tuple[str, int, int], str] = {}
        for i in range(0, len(absolutes), 500):
            chunk = absolutes[i : i + 500]
            rows = self.db.execute(
                f"SELECT path, size, mtime_ns, digest FROM file_digests WHERE path IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            found.update(((path, size, mtime_ns), digest) for path, size, mtime_ns, digest in rows)
        return found

    def _hash(self, todo: dict[str, tuple[str, int, int]], out: dict[str, str], began_ns: int) -> None:
        def one(absolute: str) -> str:
            try:
                return file_digest(absolute)
            except FileNotFoundError:  # removed between stat and read
                return MISSING
            except OSError as exc:
                return f"unreadable: {exc.strerror or type(exc).__name__}"

        absolutes = sorted({absolute for absolute, _, _ in todo.values()})
        if len(absolutes) > 1 and self.workers > 1:
            with ThreadPoolExecutor(min(self.workers, len(absolutes))) as pool:
                digests = dict(zip(absolutes, pool.map(one, absolutes)))
        else:
            digests = {absolute: one(absolute) for absolute in absolutes}
        settled = began_ns - int(RACY_SECONDS * 1e9)
        rows = []
        for path, probe in todo.items():
            out[path] = digests[probe[0]]
        for absolute, size, mtime_ns in set(todo.values()):
            if digests[absolute].startswith("sha256:") and mtime_ns <= settled:
                rows.append((absolute, size, mtime_ns, digests[absolute], time.time()))
        self.stats.hashed += len(absolutes)
        self.stats.bytes_hashed += sum(size for _, size, _ in set(todo.values()))
        if rows:
            with self.db:
                self.db.execute("BEGIN")
                self.db.executemany("INSERT OR REPLACE INTO file_digests VALUES (?,?,?,?,?)", rows)
