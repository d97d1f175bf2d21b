"""Meta-training across processes and hosts with ``jax.distributed``.

One meta-training run may span several processes (hosts of a TPU pod or a
Slurm job, or several processes on one machine). Every process runs the same
program; the PES runs are sharded over the devices of all processes
(`meta_train.trainer.device_mesh`), and the meta-gradient is a reduction over
them. The random streams are per run, so a run's batches, perturbations and
resets do not depend on which process or device holds it: 2 processes x 4
devices and 1 process x 8 devices give the same meta-parameters.

Only the primary process (index 0) writes the run directory; every process
reads it when resuming, so it must be on a file system they share (or a copy
of it on every host).

Example (one machine, two processes on CPU, each with 4 virtual devices)::

  XLA_FLAGS=--xla_force_host_platform_device_count=4 unf-meta-train --task tiny_mlp \\
      --out runs/two_processes --coordinator-address 127.0.0.1:12355 --num-processes 2 \\
      --process-id 0 &
  XLA_FLAGS=--xla_force_host_platform_device_count=4 unf-meta-train --task tiny_mlp \\
      --out runs/two_processes --coordinator-address 127.0.0.1:12355 --num-processes 2 \\
      --process-id 1
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
# Seconds without a heartbeat after which the coordinator declares a process
# dead and the others stop with an error instead of waiting in a collective.
DEFAULT_HEARTBEAT_TIMEOUT_S = 60


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None,
               heartbeat_timeout_s: int = DEFAULT_HEARTBEAT_TIMEOUT_S) -> None:
  """Joins this process to a multi-process run (``jax.distributed.initialize``).

  Without arguments JAX detects the cluster (Slurm, Cloud TPU, Open MPI...).
  On CPU the processes talk through gloo collectives.

  Args:
    coordinator_address: ``HOST:PORT`` of process 0.
    num_processes: processes in the run.
    process_id: this process's index, ``0 <= process_id < num_processes``.
    heartbeat_timeout_s: after this many seconds without news from a process,
      the others stop with an error rather than hang.

  Raises:
    ValueError: inconsistent arguments (named).
  """
  given = {"--coordinator-address": coordinator_address, "--num-processes": num_processes,
           "--process-id": process_id}
  if any(v is not None for v in given.values()) and any(v is None for v in given.values()):
    missing = ", ".join(flag for flag, v in given.items() if v is None)
    raise ValueError(f"a multi-process run given by hand needs all three of "
                     f"{', '.join(given)}; missing: {missing}")
  if num_processes is not None:
    if num_processes < 1:
      raise ValueError(f"--num-processes must be at least 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"--process-id must be in [0, {num_processes}), got {process_id}")
  # Only the CPU client reads this (accelerators have their own collectives), and it
  # must be set before the first backend starts, which rules out asking for the platform.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id,
                             heartbeat_timeout_seconds=heartbeat_timeout_s)


def is_primary() -> bool:
  """Whether this process writes the run directory (process 0)."""
  return jax.process_index() == 0


def to_host(tree: PyTree) -> PyTree:
  """Every leaf as a full numpy array on every process.

  Arrays sharded over devices of other processes are gathered, which is a
  collective: every process must call this at the same point.
  """
  def gather(leaf):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      if leaf.is_fully_replicated:
        return np.asarray(leaf.addressable_data(0))
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(leaf)
  return jax.tree.map(gather, tree)


def to_devices(host_tree: PyTree, like: PyTree) -> PyTree:
  """Places full host arrays with the shardings of the arrays of ``like`` (on every process)."""
  def place(value, reference):
    value = np.asarray(value)
    sharding = getattr(reference, "sharding", None)
    if sharding is None or len(sharding.device_set) == 1:
      # Left uncommitted, as a fresh state's arrays are: later code may place it on a mesh
      # spanning other processes, which a committed single-device array cannot move to.
      return jnp.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
  return jax.tree.map(place, host_tree, like)
