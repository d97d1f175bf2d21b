"""The inner problem PES unrolls: a task reduced to pure functions of device arrays.

A training split small enough for the devices lives there, and the parallel
runs draw their batches inside the compiled step. A larger one stays in host
memory (``max_device_data_mb``): the rows of every batch are still drawn on the
device from the same keys, so the batches are identical, and each process
gathers on the host the batches of the runs its devices hold
(`meta_train.pes.TruncatedPES.estimate`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


@dataclasses.dataclass(frozen=True)
class InnerProblem:
  """Pure functions and data of an inner training problem.

  Attributes:
    name: for messages and run directories.
    init: ``key -> params``.
    loss: ``(params, batch) -> scalar``.
    sample_batch: ``(data, key) -> batch``; runs on the device, so that all
      parallel runs draw their batches inside one compiled step.
    data: arrays ``sample_batch`` reads (passed as an argument, never baked
      into the compiled program as constants).
    normalizer: maps a loss to the meta-loss scale (e.g. clipping).
    host_data: the split in host memory when it is not on the devices (then
      ``data`` is empty and ``batch_rows`` is given).
    batch_rows: ``key -> rows``, the rows of ``host_data`` one batch takes
      (``sample_batch`` draws the same rows from the same key).
  """

  name: str
  init: Callable[[jax.Array], PyTree]
  loss: Callable[[PyTree, PyTree], jax.Array]
  sample_batch: Callable[[PyTree, jax.Array], PyTree]
  data: PyTree = dataclasses.field(default_factory=dict)
  normalizer: Callable[[jax.Array], jax.Array] = lambda loss: loss
  host_data: dict[str, np.ndarray] | None = None
  batch_rows: Callable[[jax.Array], jax.Array] | None = None

  @property
  def streams(self) -> bool:
    """Whether batches come from host memory rather than from ``data`` on the devices."""
    return self.host_data is not None

  def train_step(self, optimizer, state: PyTree, batch: PyTree) -> tuple[PyTree, jax.Array]:
    """One inner step of ``optimizer`` on ``batch``: ``(next state, loss before the update)``."""
    loss, grads = jax.value_and_grad(self.loss)(optimizer.get_params(state), batch)
    return optimizer.update(state, grads, loss=loss), loss

  @classmethod
  def from_task(cls, task, split: str = "train",
                max_device_data_mb: float | None = None) -> "InnerProblem":
    """Batches drawn uniformly (with replacement) from the task's ``split``.

    Args:
      task: the task.
      split: its data split.
      max_device_data_mb: a split larger than this many megabytes stays in host
        memory and is streamed batch by batch; None puts it on the devices.
    """
    arrays = task.data_arrays(split)
    size = len(next(iter(arrays.values())))
    batch_size = task.batch_size

    def batch_rows(key):
      return jax.random.randint(key, (batch_size,), 0, size)

    def sample_batch(data, key):
      rows = batch_rows(key)
      return {name: value[rows] for name, value in data.items()}

    megabytes = sum(np.asarray(value).nbytes for value in arrays.values()) / 2**20
    if max_device_data_mb is not None and megabytes > max_device_data_mb:
      return cls(name=task.name, init=task.init, loss=task.loss, sample_batch=sample_batch,
                 normalizer=task.normalizer,
                 host_data={key: np.asarray(value) for key, value in arrays.items()},
                 batch_rows=batch_rows)
    data = {key: jnp.asarray(value) for key, value in arrays.items()}
    return cls(name=task.name, init=task.init, loss=task.loss,
               sample_batch=sample_batch, data=data, normalizer=task.normalizer)


def unroll(lopt, meta_params: PyTree, problem: InnerProblem, key: jax.Array,
           num_steps: int) -> jax.Array:
  """Training losses ``[num_steps]`` of one inner run from a fresh init (jit-able).

  The loss at step ``t`` is taken on step ``t``'s batch before the update, the
  quantity PES's meta-loss averages.
  """
  init_key, data_key = jax.random.split(key)
  optimizer = lopt.opt_fn(meta_params)
  state = optimizer.init(problem.init(init_key), num_steps=num_steps)

  def step(state, index):
    batch = problem.sample_batch(problem.data, jax.random.fold_in(data_key, index))
    return problem.train_step(optimizer, state, batch)

  return jax.lax.scan(step, state, jnp.arange(num_steps))[1]
