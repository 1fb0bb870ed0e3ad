"""One evaluation over many processes: where this process stands in a job (``World``) and how its ranks agree.

vfeval launches no processes. ``torchrun`` (or SLURM, or anything that sets the same variables) starts them:

- torch's variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` (what
  ``torchrun`` sets) join the job through torch's ``env://`` rendezvous;
- JAX's ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` join it through
  ``jax.distributed.initialize``, as the JAX trainer does.

Neither framework is imported unless the environment describes a job of more than one process, so a plain
``vfeval run`` stays one process with no distributed machinery at all.

Why a key-value store and not collectives. A collective (barrier, all-gather) blocks until every rank joins
it: a rank that raises before reaching it leaves the others waiting until the group's timeout (half an hour by
default), the hang users of other harnesses report. Both frameworks' process groups are built on a store that
every rank reaches (torch's c10d ``TCPStore``, the JAX coordination service's key-value store), and a store
can be *polled*. So each rank publishes what it has to say under its own key (its share of the content
identities, its stats when done), and waits for the others' keys in a loop that also reads the job's failure
counter. A rank that raises adds itself to that counter with its error before exiting, and every other rank
sees it between two batches or while it waits: everyone stops within one batch, naming the rank and its error.
A rank that dies without a word (``kill -9``, a lost machine) is the launcher's to notice: ``torchrun`` stops
the other workers of a job when one exits, and the JAX coordination service fails the job when a process stops
sending heartbeats.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from vfeval.errors import UsageError

TORCH_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
JAX_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
JOIN_TIMEOUT_S = 600.0
"""How long ranks wait for each other to join (machines of one job may start minutes apart)."""


class RankFailed(Exception):
    """A rank of the job failed; the message names it and its error. Every rank exits non-zero (code 1)."""


class Store(Protocol):
    """What vfeval needs of a job's key-value store: values are strings, counters are integers."""

    def set(self, key: str, value: str) -> None: ...

    def try_get(self, key: str) -> str | None: ...

    def add(self, key: str, amount: int) -> int: ...


class _TorchStore:
    """torch's c10d store (the one ``env://`` rendezvous connects to: torchrun's agent, or rank 0)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def set(self, key: str, value: str) -> None:
        self.store.set(key, value)

    def try_get(self, key: str) -> str | None:
        if not self.store.check([key]):
            return None
        return self.store.get(key).decode()

    def add(self, key: str, amount: int) -> int:
        return int(self.store.add(key, amount))


class _JaxStore:
    """The JAX coordination service's key-value store (``jax.distributed``)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def set(self, key: str, value: str) -> None:
        self.client.key_value_set(key, value, allow_overwrite=True)

    def try_get(self, key: str) -> str | None:
        try:
            return str(self.client.key_value_try_get(key))
        except Exception:  # the client raises (NOT_FOUND) for a key nobody set yet
            return None

    def add(self, key: str, amount: int) -> int:
        return int(self.client.key_value_increment(key, amount))


@dataclass
class World:
    """This process's place in a job: ``rank`` of ``size`` (one process: rank 0 of 1, no store)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    backend: str = "none"
    """``torch`` (env:// rendezvous), ``jax`` (jax.distributed) or ``none`` (one process)."""
    store: Store | None = field(default=None, repr=False)
    poll_s: float = 0.05
    _counts: dict[str, int] = field(default_factory=dict, repr=False)
    """Counters of a world of one (a job keeps them in its store)."""
    _round: int = field(default=0, repr=False)

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """What a result records of the job (cost and provenance; never a fingerprint)."""
        return {"world_size": self.size, "backend": self.backend}

    # -- failures ---------------------------------------------------------------------------------
    def fail(self, error: str) -> None:
        """Tell every rank that this one failed with ``error`` (before this process exits)."""
        if self.store is None:
            return
        try:
            self.store.set(f"failed/{self.rank}", error)
            self.store.add("failures", 1)
        except Exception:  # the store may be gone already (the launcher is tearing the job down)
            pass

    def check(self) -> None:
        """Raise ``RankFailed`` naming the failed rank, if another rank of the job has failed."""
        if self.store is None:
            return
        if self.store.add("failures", 0) == 0:
            return
        for k in range(self.size):
            if k == self.rank:
                continue
            error = self.store.try_get(f"failed/{k}")
            if error is not None:
                raise RankFailed(f"rank {k} of {self.size} failed: {error}")

    # -- agreement --------------------------------------------------------------------------------
    def next_round(self) -> None:
        """Start a new piece of work (one run, one extraction): its keys are new, so a second run in the same
        job never reads the first one's answers. Every rank calls it at the same points, so all agree."""
        self._round += 1
        self._counts.clear()

    def _key(self, name: str) -> str:
        return f"{self._round}/{name}"

    def publish(self, name: str, value: Any) -> None:
        """Make ``value`` (JSON) this rank's answer to ``name``, and count it as arrived."""
        if self.store is not None:
            self.store.set(self._key(f"{name}/{self.rank}"), json.dumps(value))
            self.store.add(self._key(f"{name}/arrived"), 1)

    def gather(self, name: str, value: Any, on_wait: Any = None) -> list[Any]:
        """Every rank's ``value`` for ``name``, in rank order (this rank's included), once all have published.

        Waits for as long as the others take (a shard may take hours), stopping at once if a rank fails;
        ``on_wait()`` is called between polls (rank 0 refreshes its progress bar there). A poll is one read of
        the arrival counter and one of the failure counter, however many ranks the job has."""
        if self.store is None:
            return [value]
        self.publish(name, value)
        self._wait(lambda: self.store.add(self._key(f"{name}/arrived"), 0) >= self.size, on_wait)
        return [json.loads(self._get(f"{name}/{k}")) for k in range(self.size)]

    def broadcast(self, name: str, value: Any = None) -> Any:
        """Rank 0's ``value`` for ``name``, on every rank."""
        if self.store is None:
            return value
        if self.main:
            self.publish(name, value)
            return value
        self._wait(lambda: self.store.try_get(self._key(f"{name}/0")) is not None)
        return json.loads(self._get(f"{name}/0"))

    def _get(self, name: str) -> str:
        assert self.store is not None
        raw = self.store.try_get(self._key(name))
        if raw is None:
            raise RuntimeError(f"the job's store lost {self._key(name)!r}")
        return raw

    def _wait(self, ready: Any, on_wait: Any = None) -> None:
        delay = self.poll_s
        while not ready():
            self.check()
            if on_wait is not None:
                on_wait()
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def barrier(self, name: str) -> None:
        """Wait until every rank has reached ``name`` (or one has failed)."""
        self.gather(f"barrier/{name}", True)

    # -- progress ---------------------------------------------------------------------------------
    def advance(self, name: str, amount: int) -> int:
        """Add ``amount`` to the job-wide counter ``name``; returns its total over every rank so far."""
        if self.store is None:
            self._counts[name] = self._counts.get(name, 0) + amount
            return self._counts[name]
        return self.store.add(self._key(f"count/{name}"), amount)

    def count(self, name: str) -> int:
        return self._counts.get(name, 0) if self.store is None else self.store.add(self._key(f"count/{name}"), 0)

    def close(self) -> None:
        """Leave the job: the JAX coordination service wants every process to say so."""
        if self.backend == "jax":
            import jax

            try:
                jax.distributed.shutdown()
            except Exception:  # already shut down, or the service is gone with its job
                pass


def _int_env(name: str, default: int | None = None) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"environment variable {name}={raw!r} must be an integer") from None


def _join_torch() -> World:
    import torch.distributed as dist

    world = _int_env("WORLD_SIZE", 1) or 1
    rank = _int_env("RANK")
    if rank is None:
        raise UsageError("WORLD_SIZE is set but RANK is not; start the job with torchrun, which sets both")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise UsageError(f"WORLD_SIZE={world} but {name} is not set; start the job with torchrun, which sets it")
    store, rank, world = next(dist.rendezvous("env://", timeout=timedelta(seconds=JOIN_TIMEOUT_S)))
    local = _int_env("LOCAL_RANK", 0) or 0
    _torch_device(local)
    return World(rank=rank, size=world, local_rank=local, local_size=_int_env("LOCAL_WORLD_SIZE", 1) or 1,
                 backend="torch", store=_TorchStore(dist.PrefixStore("vfeval", store)))


def _torch_device(local_rank: int) -> None:
    """Each rank encodes on its own GPU: ``cuda`` in an encoder's config means ``cuda:LOCAL_RANK`` here."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())


def _join_jax() -> World:
    import jax

    count = _int_env("JAX_NUM_PROCESSES")
    index = _int_env("JAX_PROCESS_ID")
    if not jax.distributed.is_initialized():
        jax.distributed.initialize(coordinator_address=os.environ.get("JAX_COORDINATOR_ADDRESS") or None,
                                   num_processes=count, process_id=index,
                                   initialization_timeout=int(JOIN_TIMEOUT_S))
    from jax._src.distributed import global_state  # the coordination service's client: no public handle

    if global_state.client is None:
        raise UsageError("jax.distributed did not start a coordination client; check JAX_COORDINATOR_ADDRESS")
    local = _int_env("LOCAL_RANK", 0) or 0
    return World(rank=jax.process_index(), size=jax.process_count(), local_rank=local,
                 local_size=_int_env("LOCAL_WORLD_SIZE", 1) or 1, backend="jax",
                 store=_JaxStore(global_state.client))


def join() -> World:
    """This process's ``World``: joins the job the environment describes (torch's variables first, then
    JAX's), or a world of one when it describes none."""
    if (_int_env("WORLD_SIZE", 1) or 1) > 1:
        return _join_torch()
    if (_int_env("JAX_NUM_PROCESSES", 1) or 1) > 1:
        return _join_jax()
    return World()


# -- sharding ---------------------------------------------------------------------------------------


def shard(n_units: int, rank: int, size: int) -> list[int]:
    """The units (batches) rank ``rank`` of ``size`` computes: every ``size``-th, from its own rank on.

    Units are the batches one process would compute, in its order; dealing them out round-robin depends only
    on their list and the world size, keeps every rank's share within one unit of the others, and leaves
    each batch exactly as one process would form it (a batch's composition can change a learned encoder's
    last bits, so the numbers stay those of one process)."""
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"rank {rank} of {size}")
    return list(range(rank, n_units, size))
