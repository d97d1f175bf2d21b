"""learned_optimization tasks as ours and ours as its (optional extra: ``make lo-install``).

Importing this module imports learned_optimization (through
`unf_lopt.integrations.learned_optimization`); `tasks.registry` imports it only
for ``lo:`` task names, so nothing else needs the extra.

* :func:`lo_task`: a learned_optimization ``Task`` (or one instance of a
  ``TaskFamily``) as our `tasks.Task`; ``get_task("lo:NAME")`` calls it, so
  ``unf-meta-train --task lo:quadratic`` and ``unf-evaluate --task lo:...`` work.
* :func:`as_lo_task` / :func:`as_lo_task_family`: our tasks the other way round,
  for learned_optimization's ``TruncatedPES``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import unf_lopt as U
from unf_lopt.integrations import learned_optimization as lo_integration
from unf_lopt.tasks import base

PyTree = Any
lo = lo_integration.lo


# -- our tasks inside learned_optimization ------------------------------------

class TaskAdapter(lo.tasks_base.Task):
  """One of our `tasks.Task` as a learned_optimization ``Task``.

  Its ``datasets`` are our task's shuffled numpy iterators (train, valid as
  both ``inner_valid`` and ``outer_valid``, test), seeded by the task's
  ``data_seed``.
  """

  def __init__(self, task: base.Task):
    super().__init__()
    self.task = task
    seed = task.data_seed
    valid = functools.partial(task.dataset, "valid")
    self.datasets = lo.datasets_base.Datasets(
        train=task.dataset("train", seed), inner_valid=valid(seed + 1),
        outer_valid=valid(seed + 2), test=task.dataset("test", seed + 3))

  def init(self, key: jax.Array) -> PyTree:
    return self.task.init(key)

  def loss(self, params: PyTree, key: jax.Array, data: PyTree) -> jax.Array:
    return self.task.loss(params, data, key)

  def loss_and_aux(self, params, key, data):
    metrics = self.task.metrics(params, data)
    return metrics["loss"], {name: value for name, value in metrics.items() if name != "loss"}

  def normalizer(self, loss: jax.Array) -> jax.Array:
    return self.task.normalizer(loss)

  @property
  def name(self) -> str:
    return self.task.name


class TaskFamilyAdapter(lo.tasks_base.TaskFamily):
  """Instances of one of our tasks that differ in their initialisation (as `tasks.TaskFamily`)."""

  def __init__(self, task: base.Task):
    super().__init__()
    self.task = TaskAdapter(task)
    self.datasets = self.task.datasets
    self._name = task.name

  def sample(self, key: jax.Array) -> jax.Array:
    # learned_optimization initialises each instance from its own key; nothing to sample.
    del key
    return jnp.asarray(0, jnp.int32)

  def task_fn(self, cfg) -> TaskAdapter:
    del cfg
    return self.task


def as_lo_task(task: base.Task) -> TaskAdapter:
  """Our task as a learned_optimization ``Task``."""
  return TaskAdapter(task)


def as_lo_task_family(task: base.Task):
  """A learned_optimization ``TaskFamily`` for meta-training on ``task``.

  A task made by :func:`lo_task` gives back learned_optimization's own family
  (its own ``Task`` for single tasks), so its ``TruncatedPES`` samples task
  configurations as it always does; our tasks are wrapped.
  """
  if isinstance(task, LOTask):
    return task.lo_family
  return TaskFamilyAdapter(task)


# -- learned_optimization's tasks inside ours ---------------------------------

# Each inner step of a wrapped task reads one row of its data arrays: one batch
# drawn from the learned_optimization task's iterator (if it has data) and a seed
# for the key its loss receives. This many rows are drawn per split.
NUM_BATCHES = 200


def _vector_spec(params: PyTree) -> PyTree:
  """One shared permutation of the coordinates of every vector (the quadratics)."""
  return jax.tree.map(lambda p: ("coordinates",) * jnp.ndim(p), params)


# name -> (constructor of a learned_optimization Task or TaskFamily, spec of its params)
LO_TASKS: dict[str, tuple[Callable[[], Any], Callable[[PyTree], PyTree]]] = {
    "quadratic": (lambda: lo.quadratics.QuadraticTask(dim=10), _vector_spec),
    "sum_quadratic": (lambda: lo.quadratics.SumQuadraticTask(), _vector_spec),
    "quadratic_family": (lambda: lo.quadratics.FixedDimQuadraticFamily(dim=10), _vector_spec),
    "noisy_quadratic_family": (lambda: lo.quadratics.NoisyQuadraticFamily(dim=10, cov=0.1),
                               _vector_spec),
    "quadratic_family_data": (lambda: lo.quadratics.FixedDimQuadraticFamilyData(dim=10),
                              _vector_spec),
}


class LOTask(base.Task):
  """A learned_optimization ``Task`` (or one instance of a ``TaskFamily``) as our `tasks.Task`.

  Its data arrays hold, per row, one batch drawn from the learned_optimization
  task's own iterator (tasks without data have none) and a seed that makes
  the PRNG key its loss receives; ``batch_size`` is 1 row. Losses are means
  over the rows of a batch. learned_optimization tasks report no accuracy
  (``metrics`` gives NaN).

  Args:
    name: registry name (``lo:...``).
    lo_task_or_family: a learned_optimization ``Task`` or ``TaskFamily``.
    spec: ``params -> spec`` for the update networks; ``None`` infers it from
      the loss (`unf_lopt.infer_spec`).
    task_seed: which instance of a family (seeds the key given to its ``sample``).
    num_batches: rows drawn per split.
  """

  batch_size = 1
  num_classes = 1  # unused: the learned_optimization task's normalizer is used
  io_axes = frozenset()

  def __init__(self, name: str, lo_task_or_family, spec: Callable[[PyTree], PyTree] | None,
               task_seed: int = 0, num_batches: int = NUM_BATCHES):
    self.name = name
    if isinstance(lo_task_or_family, lo.tasks_base.TaskFamily):
      self.lo_family = lo_task_or_family
      # Folded so that the instance is not drawn with the key of a parameter init
      # (FixedDimQuadraticFamily would then start at its optimum).
      cfg = lo_task_or_family.sample(jax.random.fold_in(jax.random.PRNGKey(task_seed), 1))
      self.lo_task = lo_task_or_family.task_fn(cfg)
    elif isinstance(lo_task_or_family, lo.tasks_base.Task):
      self.lo_task = lo_task_or_family
      self.lo_family = lo.tasks_base.single_task_to_family(lo_task_or_family, name=name)
    else:
      raise TypeError(f"{name}: expected a learned_optimization Task or TaskFamily, got "
                      f"{type(lo_task_or_family).__name__}")
    self._spec = spec
    self.num_batches = num_batches
    _, model_state = jax.eval_shape(self.lo_task.init_with_state, jax.random.PRNGKey(0))
    if model_state is not None:
      raise ValueError(f"{name} has model state (e.g. batch norm statistics); our tasks have "
                       "stateless parameters, so it cannot be wrapped")
    self._treedef = None

  @property
  def model(self):
    """None: a learned_optimization task is a pair of functions, not a flax module."""
    return None

  def init(self, key: jax.Array) -> PyTree:
    return self.lo_task.init(key)

  def _read_split(self, split: str) -> dict[str, np.ndarray]:
    rows = {"seed": np.random.default_rng(0 if split == "train" else 1).integers(
        0, 2**31 - 1, self.num_batches, dtype=np.int64).astype(np.uint32)}
    datasets = self.lo_task.datasets
    if datasets is not None:
      iterator = datasets.split("train" if split == "train" else "test")
      leaves, treedef = [], None
      for _ in range(self.num_batches):
        batch_leaves, treedef = jax.tree.flatten(next(iterator))
        leaves.append(batch_leaves)
      self._treedef = treedef
      for index, column in enumerate(zip(*leaves)):
        rows[f"leaf_{index}"] = np.stack([np.asarray(x) for x in column])
    return rows

  def dummy_batch(self) -> dict[str, np.ndarray]:
    return {key: np.zeros_like(value[:1]) for key, value in self._dataset_split("train").items()}

  def _row_loss(self, params: PyTree, row: dict[str, jax.Array]) -> jax.Array:
    data = None
    if self.lo_task.datasets is not None:
      self._dataset_split("train")  # sets the batch structure (cached)
      data = jax.tree.unflatten(self._treedef,
                                [row[f"leaf_{i}"] for i in range(self._treedef.num_leaves)])
    key = jax.random.PRNGKey(row["seed"])
    return self.lo_task.loss_with_state(params, None, key, data)[0]

  def loss(self, params: PyTree, batch, key: jax.Array | None = None) -> jax.Array:
    del key  # each row carries the seed of its loss's key
    return jnp.mean(jax.vmap(self._row_loss, in_axes=(None, 0))(params, batch))

  def metrics(self, params: PyTree, batch) -> dict[str, jax.Array]:
    return {"loss": self.loss(params, batch), "accuracy": jnp.asarray(jnp.nan, jnp.float32)}

  def normalizer(self, loss: jax.Array) -> jax.Array:
    return self.lo_task.normalizer(loss)

  def spec(self, params: PyTree | None = None) -> PyTree:
    if params is None:
      params = jax.eval_shape(self.init, jax.random.PRNGKey(0))
    if self._spec is None:
      return self._traced_spec(params)
    return self._spec(params)

  def _traced_spec(self, params: PyTree) -> PyTree:
    """The symmetry of the task's loss that `unf_lopt.infer_spec` proves (data axes fixed)."""
    return U.infer_spec(params, self.loss, (self.dummy_batch(),))


def lo_task(name: str, spec: Callable[[PyTree], PyTree] | None = None, task_seed: int = 0,
            num_batches: int = NUM_BATCHES, **options) -> LOTask:
  """A learned_optimization task as our `tasks.Task` (what ``get_task("lo:NAME")`` returns).

  Args:
    name: one of `LO_TASKS` (``quadratic``, ``sum_quadratic``,
      ``quadratic_family``, ``noisy_quadratic_family``, ``quadratic_family_data``)
      or a ``module.Class`` path under ``learned_optimization.tasks`` (e.g.
      ``quadratics.LogQuadraticTask``), constructed with ``options``.
      Its tfds-based image and language tasks need their datasets downloaded.
    spec: ``params -> spec``; default: the registered one, else what
      `unf_lopt.infer_spec` proves from the task's loss (data axes fixed).
    task_seed: which instance of a task family (seeds the key of its ``sample``).
    num_batches: data rows drawn per split.
  """
  if name in LO_TASKS:
    if options:
      raise ValueError(f"lo:{name} takes no options besides spec, task_seed and num_batches; "
                       f"got {sorted(options)}")
    make, default_spec = LO_TASKS[name]
    made = make()
  else:
    factory = lo_integration.resolve("learned_optimization.tasks", name, "task", sorted(LO_TASKS))
    made = factory(**options)
    default_spec = None
  return LOTask(f"lo:{name}", made, spec or default_spec, task_seed, num_batches)
