"""The weight spaces the benchmarks time: the networks of the paper's tasks, from `unf_lopt.tasks`.

A benchmark names a weight space by its short name (``mlp``, ``cnn``, ``rnn``,
``transformer``: the paper's four tasks) or by any registered task, with
``:paper`` for the authors' spec (``cnn:paper``: filter taps permuted). The
parameters come from the task's own ``init`` and spec, so a benchmark times
exactly the network the task trains.
"""

from __future__ import annotations

import math
from typing import Any

import jax

from unf_lopt import tasks

PAPER_TASKS = {"mlp": "mlp_fmnist", "cnn": "cnn_cifar10", "rnn": "rnn_lm1b",
               "transformer": "transformer_lm1b"}


def task_for(name: str) -> tasks.Task:
  """The task of a short name (`PAPER_TASKS`) or of a registered task name.

  A ``:paper`` suffix (``cnn:paper``) gives the task with the authors' spec
  (``get_task(..., spec="paper")``) instead of the true one.
  """
  base, _, spec = name.partition(":")
  options = {"spec": spec} if spec else {}
  return tasks.get_task(PAPER_TASKS.get(base, base), **options)


def weight_space(name: str) -> tuple[Any, Any]:
  """``(parameter shapes, spec)`` of the task ``name``: shapes only, nothing is initialised."""
  task = task_for(name)
  shapes = jax.eval_shape(task.init, jax.random.PRNGKey(0))
  return shapes, task.spec(shapes)


def count_entries(params: Any) -> int:
  """Scalars in a pytree of arrays or shapes."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
