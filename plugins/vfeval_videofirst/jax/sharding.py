"""Where the JAX trainer runs: its processes (``jax.distributed``) and devices (a ``Mesh``), and how a
batch is laid out on them.

One mesh axis, ``data``, over every device of every process. Batches are sharded along it (each device
holds its rows of the global batch), parameters and optimizer state are replicated; ``jax.jit`` compiles
the step for that layout and XLA inserts the collectives the global loss needs (the similarity matrix of
the whole batch, the mean of the gradients). Nothing here loops over processes or devices by hand.

Several hosts: start one process per host with ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0),
``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` set (under Slurm or Open MPI JAX reads the last two from the
cluster's own variables), and ``jax.distributed.initialize()`` joins them.
Each process reads its own shard of the data; the global batch is their concatenation in process order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vfeval.errors import UsageError

DATA = "data"
_DISTRIBUTED = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


@dataclass
class Placement:
    """This process's place in the job and the mesh every step runs on."""

    mesh: Mesh
    process: int
    processes: int

    @property
    def main(self) -> bool:
        return self.process == 0

    @property
    def local_devices(self) -> int:
        return len([d for d in self.mesh.devices.flat if d.process_index == self.process])

    def check_batch(self, batch_size: int, what: str) -> None:
        """A usage error unless ``optim.batch_size`` (``what`` per process) splits evenly over this process's
        devices."""
        if batch_size % self.local_devices:
            raise UsageError(
                f"config: bad value for 'optim.batch_size': {batch_size}; each process shards its {what} "
                f"over its {self.local_devices} devices, so use a multiple of {self.local_devices}"
            )

    def sharding(self, *spec: Any) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec(*spec))

    @property
    def replicated(self) -> NamedSharding:
        return self.sharding()

    def put(self, local: np.ndarray, axis: int = 0) -> jax.Array:
        """This process's rows → the global array, concatenated over processes along ``axis`` and sharded
        over the ``data`` axis there."""
        spec = [None] * local.ndim
        spec[axis] = DATA
        shape = list(local.shape)
        shape[axis] *= self.processes
        return jax.make_array_from_process_local_data(self.sharding(*spec), local, tuple(shape))

    def replicate(self, tree: Any) -> Any:
        """Host values (the same in every process) → arrays replicated on every device."""
        if self.processes == 1:
            return jax.device_put(tree, self.replicated)
        from jax.experimental import multihost_utils

        return multihost_utils.host_local_array_to_global_array(tree, self.mesh, PartitionSpec())

    def barrier(self, name: str) -> None:
        if self.processes > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)


def _distributed_from_env() -> None:
    """``jax.distributed.initialize()`` when the environment describes a job of several processes."""
    env = {k: os.environ.get(k) for k in _DISTRIBUTED}
    if not any(env.values()):
        return
    try:
        count = int(env["JAX_NUM_PROCESSES"]) if env["JAX_NUM_PROCESSES"] else None
        index = int(env["JAX_PROCESS_ID"]) if env["JAX_PROCESS_ID"] else None
    except ValueError as exc:
        raise UsageError(f"JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers ({exc})") from exc
    if count == 1:
        return
    if jax.distributed.is_initialized():
        return
    jax.distributed.initialize(num_processes=count, process_id=index)


def devices(option: str) -> list[Any]:
    """The devices of the ``device`` option: ``auto`` JAX's default platform, ``cpu``, or ``cuda`` (GPUs)."""
    if option == "auto":
        return jax.devices()
    platform = "gpu" if option == "cuda" else option
    try:
        found = jax.devices(platform)
    except RuntimeError:
        found = []
    if not found:
        raise UsageError(f"device is {option!r} but JAX sees no {platform.upper()}; set model.device=auto or cpu")
    return found


def start(device_option: str) -> Placement:
    """Join the job (if the environment describes one) and lay a one-axis mesh over every device."""
    _distributed_from_env()
    mesh = Mesh(np.asarray(devices(device_option)), (DATA,))
    return Placement(mesh, jax.process_index(), jax.process_count())
