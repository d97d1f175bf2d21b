"""The inner problem PES unrolls: a task reduced to pure functions of device arrays."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

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
  """

  name: str
  init: Callable[[jax.Array], PyTree]
  loss: Callable[[PyTree, PyTree], jax.Array]
  sample_batch: Callable[[PyTree, jax.Array], PyTree]
  data: PyTree = dataclasses.field(default_factory=dict)
  normalizer: Callable[[jax.Array], jax.Array] = lambda loss: loss

  def train_step(self, optimizer, state: PyTree, batch: PyTree) -> tuple[PyTree, jax.Array]:
    """One inner step of ``optimizer`` on ``batch``: ``(next state, loss before the update)``."""
    loss, grads = jax.value_and_grad(self.loss)(optimizer.get_params(state), batch)
    return optimizer.update(state, grads, loss=loss), loss

  @classmethod
  def from_task(cls, task, split: str = "train") -> "InnerProblem":
    """Batches drawn uniformly (with replacement) from the task's ``split`` on the device."""
    data = {key: jnp.asarray(value) for key, value in task.data_arrays(split).items()}
    size = len(next(iter(data.values())))
    batch_size = task.batch_size

    def sample_batch(data, key):
      rows = jax.random.randint(key, (batch_size,), 0, size)
      return {name: value[rows] for name, value in data.items()}

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
