"""Decoding ahead of the encoder: a pool of worker processes or threads, or one video after another inline.

    with open_pool("process", workers=0, timeout=120.0, decoder=pipeline.decoder, windows=1000) as pool:
        job = pool.submit(window, sampling)
        clips = job.result()  # list[Clip]; or raises DataError("timeout: ...") and the like

Worker processes are fresh interpreters (``vfeval.video.worker``) that talk over a socket pair. They are not
forks of the caller, whose torch or BLAS threads would not survive a fork, and unlike multiprocessing's spawn
they never re-run the caller's ``__main__`` (a script without a main guard, or one read from stdin, works).
Each worker decodes one window at a time. A window still not done ``timeout`` seconds after its worker began
it fails with ``timeout:``, and the worker is killed and replaced; a worker that dies (a crash inside
FFmpeg) fails its window with ``crash:`` and is replaced. Thread workers run the same loop in this process:
they cost nothing to start, but a hung one cannot be killed, only abandoned and replaced.

A dispatcher thread hands queued windows to idle workers and collects their answers, so workers keep decoding
while the caller's thread runs the encoder. The pool queues whatever is submitted: the caller bounds memory by
submitting only a few batches ahead.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Protocol

from vfeval.config import SamplingConfig
from vfeval.errors import DataError
from vfeval.requests import VideoWindow
from vfeval.specs import DecoderSpec
from vfeval.video.backends import VideoBackend, build_decoder
from vfeval.video.types import Clip

MODES = ("auto", "process", "thread", "inline")
AUTO_PROCESS_WINDOWS = 64
"""``auto`` decodes in processes from this many windows on; below it, in threads, which start at no cost."""
MAX_AUTO_WORKERS = 16
_STOP_WAIT = 2.0  # seconds a worker is given to exit before it is killed


def machine_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS says, else all of them)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Plan:
    mode: str
    """``process``, ``thread`` or ``inline``."""
    workers: int
    threads: int
    """FFmpeg threads per worker: the cores but one shared out between workers (0: FFmpeg chooses, inline)."""


def plan(mode: str, workers: int, windows: int) -> Plan:
    """Resolve ``run.decode`` and ``run.workers`` (0 = auto) for a run that decodes ``windows`` windows."""
    if mode not in MODES:
        raise ValueError(f"decode mode {mode!r}; use one of {', '.join(MODES)}")
    if mode == "auto":
        mode = "process" if windows >= AUTO_PROCESS_WINDOWS else "thread"
    if mode == "inline":
        return Plan("inline", 1, 0)
    # The caller's process runs the encoder: leave it a core.
    spare = max(1, machine_cores() - 1)
    workers = workers or min(spare, MAX_AUTO_WORKERS)
    return Plan(mode, workers, max(1, spare // workers))


class Job(Protocol):
    def result(self) -> list[Clip]: ...


class _Deferred:
    """A window decoded on the caller's thread when its result is asked for."""

    def __init__(self, backend: VideoBackend, window: VideoWindow, sampling: SamplingConfig) -> None:
        self.backend, self.window, self.sampling = backend, window, sampling

    def result(self) -> list[Clip]:
        return self.backend.read_window(self.window, self.sampling)


class InlinePool:
    """Decodes on the caller's thread: no overlap, no timeout; simple to debug."""

    mode = "inline"
    size = 0
    """Workers: none."""

    def __init__(self, factory: str, threads: int = 0) -> None:
        self.factory, self.threads = factory, threads
        self.backend: VideoBackend | None = None

    def submit(self, window: VideoWindow, sampling: SamplingConfig) -> Job:
        if self.backend is None:
            self.backend = build_decoder(self.factory, self.threads)
        return _Deferred(self.backend, window, sampling)

    def close(self) -> None:
        pass


class _GiveUp(Exception):
    """Workers keep failing to start: the pool has failed every window and stops dispatching."""


@dataclass
class _Running:
    future: Future
    window: VideoWindow
    deadline: float


class _Worker:
    """One worker process or thread and the parent's end of its connection."""

    def __init__(self, processes: bool, init: tuple[list[str], str, int], ready_within: float) -> None:
        ours, theirs = socket.socketpair()
        self.process: subprocess.Popen | None = None
        if processes:
            import vfeval

            env = dict(os.environ)
            home = str(Path(vfeval.__file__).resolve().parents[1])  # vfeval importable however it was found
            env["PYTHONPATH"] = os.pathsep.join(p for p in (home, env.get("PYTHONPATH")) if p)
            code = "from vfeval.video.worker import main; main()"
            try:
                self.process = subprocess.Popen(
                    [sys.executable, "-c", code, str(theirs.fileno()), str(os.getpid())],
                    pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=2, env=env,
                )  # stdout to our stderr: the caller's stdout may be machine-read
            finally:
                theirs.close()
        else:
            from vfeval.video.worker import serve

            thread = threading.Thread(target=serve, args=(Connection(theirs.detach()),), daemon=True,
                                      name="vfeval-decode")
            thread.start()
        self.conn = Connection(ours.detach())
        self.ready = False
        self.ready_by = time.monotonic() + ready_within
        self.job: _Running | None = None
        try:
            self.conn.send(init)
        except OSError:  # it died at once: the closed connection shows it, and it is replaced
            pass

    def deadline(self) -> float | None:
        return self.job.deadline if self.job is not None else None if self.ready else self.ready_by

    def exit_status(self) -> str:
        if self.process is None:
            return "its thread stopped"
        try:
            code = self.process.wait(timeout=_STOP_WAIT)
        except subprocess.TimeoutExpired:
            return "it stopped answering"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def stop(self, kill: bool, wait: bool = True) -> None:
        """Kill (or, for a thread, abandon) the worker; else ask it to exit, and kill it if it does not.
        ``wait=False`` only signals: call ``stop`` again to wait (several workers stop at once that way)."""
        if not self.conn.closed:
            if not kill:
                try:
                    self.conn.send(None)
                except (OSError, ValueError):
                    pass
            self.conn.close()
            if kill and self.process is not None:
                self.process.kill()
        if self.process is None or not wait:
            return
        try:
            self.process.wait(timeout=_STOP_WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            try:
                self.process.wait(timeout=_STOP_WAIT)
            except subprocess.TimeoutExpired:  # stuck in the kernel (a dead network mount): leave it
                pass


class WorkerPool:
    """Workers (processes or threads) fed by a dispatcher thread; see the module docstring."""

    START_TRIES = 3
    """Workers that die or hang before they are ready, in a row, before the pool gives up."""

    def __init__(self, factory: str, workers: int, threads: int, timeout: float, processes: bool = True) -> None:
        self.mode = "process" if processes else "thread"
        self.size, self.timeout, self.processes = max(1, workers), timeout, processes
        self._init = (list(sys.path), factory, threads)
        self._lock = threading.Lock()
        self._queue: deque[tuple[Future, VideoWindow, SamplingConfig]] = deque()
        self._workers: list[_Worker] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._closing = False
        self._dispatcher: threading.Thread | None = None
        self._failed = ""
        self._start_failures = 0

    # -- the caller's side --------------------------------------------------------------------------
    def submit(self, window: VideoWindow, sampling: SamplingConfig) -> Job:
        future: Future = Future()
        with self._lock:
            if self._closing:
                raise RuntimeError("the decoding pool is closed")
            if self._failed:
                future.set_exception(DataError(self._failed))
                return future
            self._queue.append((future, window, sampling))
            if self._dispatcher is None:  # start on first use: a run served from the feature store needs none
                self._dispatcher = threading.Thread(target=self._run, name="vfeval-decode-dispatch", daemon=True)
                self._dispatcher.start()
        self._wake()
        return future

    def close(self) -> None:
        with self._lock:
            self._closing = True
            queued, self._queue = list(self._queue), deque()
        for future, _, _ in queued:
            future.cancel()
        self._wake()
        if self._dispatcher is not None:
            self._dispatcher.join()
        for worker in self._workers:
            busy = worker.job is not None
            if worker.job is not None and not worker.job.future.done():
                worker.job.future.set_exception(DataError("cancelled: the run stopped"))
            worker.stop(kill=busy, wait=False)
        for worker in self._workers:
            worker.stop(kill=False)
        self._workers = []
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    # -- the dispatcher thread ----------------------------------------------------------------------
    def _new_worker(self) -> _Worker:
        return _Worker(self.processes, self._init, ready_within=max(self.timeout, 60.0))

    def _run(self) -> None:
        try:
            self._workers = [self._new_worker() for _ in range(self.size)]
            while True:
                with self._lock:
                    if self._closing:
                        return
                    self._assign()
                deadlines = [d for d in (w.deadline() for w in self._workers) if d is not None]
                timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
                ready = wait([self._wake_r, *(w.conn for w in self._workers)], timeout)
                if self._wake_r in ready:
                    self._wake_r.recv(4096)
                for i, worker in enumerate(self._workers):
                    if worker.conn in ready:
                        self._receive(i, worker)
                now = time.monotonic()
                for i, worker in enumerate(self._workers):
                    deadline = worker.deadline()
                    if deadline is not None and deadline <= now:
                        self._expire(i, worker)
        except _GiveUp:
            return
        except BaseException as exc:  # never leave the caller waiting on a future that nobody will settle
            self._fail(f"decode-error: the decoding pool failed: {type(exc).__name__}: {exc}")

    def _fail(self, reason: str) -> None:
        """Settle every queued and running window with ``reason``; later submissions fail at once."""
        with self._lock:
            self._failed = reason
            queued, self._queue = list(self._queue), deque()
        stranded = [f for f, _, _ in queued] + [w.job.future for w in self._workers if w.job is not None]
        for worker in self._workers:
            worker.job = None
        for future in stranded:
            if not future.done():
                future.set_exception(DataError(reason))

    def _assign(self) -> None:
        for i, worker in enumerate(self._workers):
            while worker.ready and worker.job is None and self._queue:
                future, window, sampling = self._queue.popleft()
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    worker.conn.send((window, sampling))
                except (OSError, ValueError):  # it died while idle: replace it, and the window waits
                    self._queue.appendleft((future, window, sampling))
                    worker.stop(kill=True)
                    self._workers[i] = self._new_worker()
                    break
                worker.job = _Running(future, window, time.monotonic() + self.timeout)

    def _replace(self, i: int, worker: _Worker, reason: str) -> None:
        was_ready = worker.ready
        worker.stop(kill=True)
        if not was_ready:
            self._start_failures += 1
            if self._start_failures >= self.START_TRIES:
                self._fail(f"decode-error: decoding workers cannot start ({reason}; see the messages above)")
                raise _GiveUp
        self._workers[i] = self._new_worker()

    def _receive(self, i: int, worker: _Worker) -> None:
        from vfeval.video.worker import READY

        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            running, worker.job = worker.job, None
            reason = worker.exit_status()
            if running is not None and not running.future.done():
                running.future.set_exception(
                    DataError(f"crash: the decoder died on {running.window.path} ({reason})")
                )
            self._replace(i, worker, reason)
            return
        if message == READY:
            worker.ready = True
            self._start_failures = 0
            return
        running, worker.job = worker.job, None
        if running is None:
            return
        clips, error = message
        if error is None:
            running.future.set_result(clips)
        else:
            running.future.set_exception(DataError(error))

    def _expire(self, i: int, worker: _Worker) -> None:
        running, worker.job = worker.job, None
        if running is None:  # it never became ready
            self._replace(i, worker, f"not ready after {max(self.timeout, 60.0):g} s")
            return
        worker.stop(kill=True)
        self._workers[i] = self._new_worker()
        what = "its process was killed" if self.processes else "its thread was abandoned"
        running.future.set_exception(DataError(
            f"timeout: decoding {running.window.path} took longer than run.video_timeout "
            f"({self.timeout:g} s); {what}"
        ))


Pool = InlinePool | WorkerPool


@contextmanager
def open_pool(mode: str, workers: int, timeout: float, decoder: DecoderSpec, windows: int) -> Iterator[Pool]:
    """A decoding pool for ``windows`` windows (see ``plan``), closed on exit: its workers stop, queued windows
    are dropped. Workers build ``decoder`` from its factory string, so a plugin's decoder works in them too."""
    factory = str(decoder.factory)
    chosen = plan(mode, workers, windows)
    pool: Any
    if chosen.mode == "inline":
        pool = InlinePool(factory, chosen.threads)
    else:
        pool = WorkerPool(factory, chosen.workers, chosen.threads, timeout, processes=chosen.mode == "process")
    try:
        yield pool
    finally:
        pool.close()
