"""One decoding worker: reads ``(window, sampling)`` requests from a connection and answers each with
``(clips, None)`` or ``(None, reason)``, one at a time.

``serve`` runs in a thread of the caller (``run.decode=thread``) or, through ``main``, in a process of its own
started by ``vfeval.video.pool`` as ``python -c "from vfeval.video.worker import main; main()" FD PARENT``.
The first message is ``(sys.path, factory, threads)``: where to import from, the decoder's
``"module:callable"`` factory, and how many threads it may decode with. The worker answers it with
``READY``.
"""

from __future__ import annotations

import os
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any

from vfeval.errors import DataError

READY = "ready"
"""Sent once the decoder is built: the pool's clock for a window starts only after it."""


def serve(conn: Connection, own_process: bool = False) -> None:
    """Answer requests on ``conn`` until it closes or sends ``None``."""
    from vfeval.video.backends import build_decoder

    try:
        sys_path, factory, threads = conn.recv()
    except (EOFError, OSError):
        return
    if own_process:
        sys.path[:] = list(dict.fromkeys([*sys_path, *sys.path]))
    backend: Any = None
    broken = ""
    try:
        backend = build_decoder(factory, threads)
    except Exception as exc:  # answered to every request below, where the run records it
        broken = f"decode-error: cannot build the decoder {factory}: {type(exc).__name__}: {exc}"
    try:
        conn.send(READY)
    except (OSError, ValueError):
        return
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        window, sampling = request
        try:
            if broken:
                raise DataError(broken)
            reply: tuple[Any, str | None] = (backend.read_window(window, sampling), None)
        except DataError as exc:
            reply = (None, str(exc))
        except Exception as exc:  # whatever a decoder raises is this window's failure, not the worker's
            reply = (None, f"decode-error: {type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except (OSError, ValueError):  # the pool gave up on this worker (a timeout) or is closing
            return
        except Exception as exc:  # the clips could not be pickled
            try:
                conn.send((None, f"decode-error: cannot return the frames: {type(exc).__name__}: {exc}"))
            except (OSError, ValueError):
                return


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this process when its parent dies, so a worker stuck in a decode never outlives
    a run that was killed; elsewhere a worker exits when its connection closes."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(0)


def main() -> None:
    fd, parent = int(sys.argv[1]), int(sys.argv[2])
    # Ctrl-C reaches the whole process group: the run stops its workers itself, and a worker that died of the
    # interrupt first would have its window recorded as a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    serve(Connection(fd), own_process=True)
