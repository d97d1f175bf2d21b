"""Interop with learned_optimization 0.0.1 (optional; the core never imports this module).

Importing this module imports learned_optimization, which is not a dependency
of unf-lopt: install it with ``make lo-install`` (a separate virtual
environment, ``.venv-lo``) or, in an environment of your own::

    pip install -r requirements-lo.txt
    pip install --no-deps learned-optimization==0.0.1

(its declared dependencies, e.g. ``dm-launchpad-nightly`` and ``flax==0.3.3``,
cannot be installed; ``requirements-lo.txt`` lists the ones it really needs).

What it provides:

* :func:`as_lo_learned_optimizer`: a `unf_lopt.NominalLOpt` as a
  ``learned_optimization`` ``LearnedOptimizer``, for its ``TruncatedPES`` and
  ``SingleMachineGradientLearner``.
* :func:`lo_task`: a learned_optimization ``Task`` (or one instance of a
  ``TaskFamily``) as our `tasks.Task`; ``get_task("lo:NAME")`` calls it, so
  ``unf-meta-train --task lo:quadratic`` and ``unf-evaluate --task lo:...`` work.
* :func:`as_lo_task` / :func:`as_lo_task_family`: our tasks the other way round.
* :func:`lo_learned_optimizer`: learned_optimization's learned optimizers
  (``MLPLOpt`` ...) with their meta-parameters, for ``unf-evaluate --optimizers
  lo:mlp_lopt``.

JAX compatibility: learned_optimization 0.0.1 (March 2022) uses names that JAX
has since removed (``jax.tree_multimap`` went in 0.3.16; the other top-level
``jax.tree_*`` aliases, ``jax.ShapedArray`` and ``jax.lib.xla_client`` later,
during the 0.4 to 0.7 series). :func:`apply_jax_compat` puts them back, and this
module calls it before its first learned_optimization import. It only adds
names that are missing, so it changes nothing on a JAX that still has them.
Verified with jax 0.10.2 (the version pinned in ``requirements-lo.txt``):
learned_optimization's own unit tests pass with it.
"""

from __future__ import annotations

import functools
import importlib
import types
from collections.abc import Callable
from typing import Any

import flax.serialization
import flax.struct
import jax
import jax.numpy as jnp
import jax.tree_util
import numpy as np
from absl import logging as absl_logging

import unf_lopt as U
from unf_lopt.tasks import base as our_tasks

PyTree = Any
LO_VERSION = "0.0.1"
INSTALL_HINT = (
    "learned_optimization is not usable in this environment ({error}). It is an optional "
    "extra: run `make lo-install` and use the virtual environment .venv-lo it creates, or in an "
    "environment of your own `pip install -r requirements-lo.txt && pip install --no-deps "
    f"learned-optimization=={LO_VERSION}`")


def apply_jax_compat() -> list[str]:
  """Restores the JAX names learned_optimization 0.0.1 uses; returns those it added.

  ``jax.tree_multimap`` (an alias of ``tree_map`` since JAX 0.2.15),
  ``jax.tree_map``, ``jax.tree_leaves``, ``jax.tree_flatten``,
  ``jax.tree_unflatten``, ``jax.tree_structure``, ``jax.ShapedArray`` and
  ``jax.lib.xla_client.Device`` (learned_optimization only uses it in type
  annotations). Idempotent. Must run before the first learned_optimization
  import: an import that fails half-way leaves gin's registry half-filled and
  every later import then fails with "A different configurable ... already
  exists".
  """
  import jax.core  # pylint: disable=g-import-not-at-top
  import jax.lib  # pylint: disable=g-import-not-at-top
  added = []
  tree_functions = {
      "tree_multimap": jax.tree_util.tree_map, "tree_map": jax.tree_util.tree_map,
      "tree_leaves": jax.tree_util.tree_leaves, "tree_flatten": jax.tree_util.tree_flatten,
      "tree_unflatten": jax.tree_util.tree_unflatten,
      "tree_structure": jax.tree_util.tree_structure,
  }
  for name, function in tree_functions.items():
    if not hasattr(jax, name):
      setattr(jax, name, function)
      added.append(f"jax.{name}")
  if not hasattr(jax, "ShapedArray"):
    jax.ShapedArray = jax.core.ShapedArray
    added.append("jax.ShapedArray")
  if not hasattr(jax.lib, "xla_client"):
    jax.lib.xla_client = types.SimpleNamespace(Device=jax.Device)
    added.append("jax.lib.xla_client")
  return added


def _import_learned_optimization() -> types.SimpleNamespace:
  """The learned_optimization modules used here, imported after the compat layer."""
  apply_jax_compat()
  names = {
      "lopt_base": "learned_optimization.learned_optimizers.base",
      "opt_base": "learned_optimization.optimizers.base",
      "tasks_base": "learned_optimization.tasks.base",
      "datasets_base": "learned_optimization.tasks.datasets.base",
      "quadratics": "learned_optimization.tasks.quadratics",
      "truncated_pes": "learned_optimization.outer_trainers.truncated_pes",
      "truncation_schedule": "learned_optimization.outer_trainers.truncation_schedule",
      "gradient_learner": "learned_optimization.outer_trainers.gradient_learner",
  }
  # learned_optimization.summary logs an ERROR when the optional oryx is
  # missing; its summaries are not used here.
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.FATAL)
  try:
    return types.SimpleNamespace(**{short: importlib.import_module(module)
                                    for short, module in names.items()})
  except ImportError as error:
    raise ImportError(INSTALL_HINT.format(error=error)) from error
  finally:
    absl_logging.set_verbosity(verbosity)


lo = _import_learned_optimization()


# -- our learned optimizer inside learned_optimization ------------------------

@flax.struct.dataclass
class AdaptedState:
  """learned_optimization's view of our optimizer state: ours plus its model state."""

  inner: PyTree  # the NominalState / AdamState of our optimizer
  state: PyTree  # learned_optimization's model state (None for stateless tasks)

  @property
  def params(self) -> PyTree:
    return self.inner.params


class _AdaptedOptimizer(lo.opt_base.Optimizer):
  """An optimizer of ours behind learned_optimization's ``Optimizer`` signatures.

  Its ``init`` takes the model state as the second positional argument, where
  ours takes ``num_steps``; steps whose gradient or loss is not finite are
  skipped (and counted) as in our optimizer.
  """

  def __init__(self, optimizer):
    super().__init__()
    self.optimizer = optimizer

  def init(self, params, model_state=None, num_steps=None, key=None, **unused) -> AdaptedState:
    del unused
    return AdaptedState(self.optimizer.init(params, num_steps=num_steps, key=key), model_state)

  def get_params(self, state: AdaptedState) -> PyTree:
    return self.optimizer.get_params(state.inner)

  def get_state(self, state: AdaptedState) -> PyTree:
    return state.state

  def set_params(self, state: AdaptedState, params: PyTree) -> AdaptedState:
    return state.replace(inner=state.inner.replace(params=params))

  def update(self, opt_state: AdaptedState, grad, loss=None, model_state=None, key=None,
             **unused) -> AdaptedState:
    del key, unused
    return AdaptedState(self.optimizer.update(opt_state.inner, grad, loss=loss), model_state)

  @property
  def name(self) -> str:
    return type(self.optimizer).__name__


class LearnedOptimizerAdapter(lo.lopt_base.LearnedOptimizer):
  """A `unf_lopt.NominalLOpt` as a learned_optimization ``LearnedOptimizer``.

  Args:
    lopt: our learned optimizer (built on the task's weight space).
    initial_meta_params: if given, ``init`` returns these instead of a fresh
      initialisation (to continue from a checkpoint, or to start both
      meta-training backends from the same point).
  """

  def __init__(self, lopt: U.NominalLOpt, initial_meta_params: PyTree | None = None):
    super().__init__()
    self.lopt = lopt
    self.initial_meta_params = initial_meta_params

  def init(self, key: jax.Array) -> PyTree:
    if self.initial_meta_params is not None:
      return self.initial_meta_params
    return self.lopt.init(key)

  def opt_fn(self, theta: PyTree, is_training: bool = False) -> _AdaptedOptimizer:
    return _AdaptedOptimizer(self.lopt.opt_fn(theta, is_training=is_training))

  @property
  def name(self) -> str:
    return self.lopt.name


def as_lo_learned_optimizer(lopt: U.NominalLOpt,
                            initial_meta_params: PyTree | None = None) -> LearnedOptimizerAdapter:
  """Our learned optimizer as a learned_optimization ``LearnedOptimizer``.

  Example (needs learned_optimization)::

    lopt = U.NominalLOpt("unf", spec=task.spec, params_like=params)
    family = as_lo_task_family(task)
    pes = lo.truncated_pes.TruncatedPES(family, as_lo_learned_optimizer(lopt), ...)
  """
  if not isinstance(lopt, U.NominalLOpt):
    raise TypeError(f"expected a unf_lopt.NominalLOpt, got {type(lopt).__name__}")
  return LearnedOptimizerAdapter(lopt, initial_meta_params)


# -- our tasks inside learned_optimization ------------------------------------

class TaskAdapter(lo.tasks_base.Task):
  """One of our `tasks.Task` as a learned_optimization ``Task``.

  Its ``datasets`` are our task's shuffled numpy iterators (train, valid as
  both ``inner_valid`` and ``outer_valid``, test), seeded by the task's
  ``data_seed``.
  """

  def __init__(self, task: our_tasks.Task):
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

  def __init__(self, task: our_tasks.Task):
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


def as_lo_task(task: our_tasks.Task) -> TaskAdapter:
  """Our task as a learned_optimization ``Task``."""
  return TaskAdapter(task)


def as_lo_task_family(task: our_tasks.Task):
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


def _fixed_spec(params: PyTree) -> PyTree:
  """No permutation symmetry claimed: always valid, but the UNF layers then mix all entries."""
  return jax.tree.map(lambda p: (U.FIXED,) * jnp.ndim(p), params)


def _infer_or_fixed(params: PyTree) -> PyTree:
  try:
    return U.infer_spec(params)
  except U.SpecError:
    return _fixed_spec(params)


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


class LOTask(our_tasks.Task):
  """A learned_optimization ``Task`` (or one instance of a ``TaskFamily``) as our `tasks.Task`.

  Its data arrays hold, per row, one batch drawn from the learned_optimization
  task's own iterator (tasks without data have none) and a seed that makes
  the PRNG key its loss receives; ``batch_size`` is 1 row. Losses are means
  over the rows of a batch. learned_optimization tasks report no accuracy
  (``metrics`` gives NaN).

  Args:
    name: registry name (``lo:...``).
    lo_task_or_family: a learned_optimization ``Task`` or ``TaskFamily``.
    spec: ``params -> spec`` for the update networks.
    task_seed: which instance of a family (seeds the key given to its ``sample``).
    num_batches: rows drawn per split.
  """

  batch_size = 1
  num_classes = 1  # unused: the learned_optimization task's normalizer is used
  io_axes = frozenset()

  def __init__(self, name: str, lo_task_or_family, spec: Callable[[PyTree], PyTree],
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

  @functools.cache
  def _dataset_split(self, split: str) -> dict[str, np.ndarray]:
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
    return self._spec(params)


def _resolve(root: str, dotted: str, what: str, known: list[str]):
  """``root.dotted`` (``module.Attribute``) or a clear error listing the short names."""
  module_name, _, attribute = dotted.rpartition(".")
  try:
    return getattr(importlib.import_module(f"{root}.{module_name}"), attribute)
  except (ImportError, AttributeError, ValueError) as error:
    raise KeyError(f"unknown learned_optimization {what} {dotted!r} ({error}); use one of "
                   f"{', '.join(known)} or a path under {root} such as "
                   f"'{root.rsplit('.', 1)[-1]}.module.Class'") from error


def lo_task(name: str, spec: Callable[[PyTree], PyTree] | None = None, task_seed: int = 0,
            num_batches: int = NUM_BATCHES, **options) -> LOTask:
  """A learned_optimization task as our `tasks.Task` (what ``get_task("lo:NAME")`` returns).

  Args:
    name: one of `LO_TASKS` (``quadratic``, ``sum_quadratic``,
      ``quadratic_family``, ``noisy_quadratic_family``, ``quadratic_family_data``)
      or a ``module.Class`` path under ``learned_optimization.tasks`` (e.g.
      ``quadratics.LogQuadraticTask``), constructed with ``options``.
      Its tfds-based image and language tasks need their datasets downloaded.
    spec: ``params -> spec``; default: the registered one, else `unf_lopt.infer_spec`
      where it recognises the parameters, else no symmetry (all axes fixed).
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
    factory = _resolve("learned_optimization.tasks", name, "task", sorted(LO_TASKS))
    made = factory(**options)
    default_spec = _infer_or_fixed
  return LOTask(f"lo:{name}", made, spec or default_spec, task_seed, num_batches)


# -- learned_optimization's learned optimizers inside ours --------------------

LO_OPTIMIZERS = {
    "mlp_lopt": "mlp_lopt.MLPLOpt",
    "adafac_mlp_lopt": "adafac_mlp_lopt.AdafacMLPLOpt",
    "nn_adam": "nn_adam.NNAdam",
    "learnable_sgd": "base.LearnableSGD",
    "learnable_sgdm": "base.LearnableSGDM",
    "learnable_adam": "base.LearnableAdam",
}


def lo_learned_optimizer(entry: str, seed: int = 0) -> tuple[Any, PyTree]:
  """``(learned optimizer, meta-parameters)`` for an ``unf-evaluate`` entry ``NAME[@FILE]``.

  ``NAME`` is one of `LO_OPTIMIZERS` or a ``module.Class`` path under
  ``learned_optimization.learned_optimizers``. Without ``@FILE`` the
  meta-parameters are the optimizer's ``init(PRNGKey(seed))``; ``FILE`` holds
  ``flax.serialization.to_bytes`` of the meta-parameters, or of the
  ``ParameterCheckpoint`` learned_optimization's outer training writes. The
  returned optimizer's ``opt_fn(meta)`` has the ``init`` / ``update`` /
  ``get_params`` our evaluation calls.
  """
  name, _, path = entry.partition("@")
  dotted = LO_OPTIMIZERS.get(name, name)
  factory = _resolve("learned_optimization.learned_optimizers", dotted, "learned optimizer",
                     sorted(LO_OPTIMIZERS))
  lopt = factory()
  meta = lopt.init(jax.random.PRNGKey(seed))
  if path:
    meta = load_lo_meta_params(path, meta)
  return lopt, meta


def load_lo_meta_params(path: str, like: PyTree) -> PyTree:
  """Meta-parameters shaped like ``like`` from a flax-serialised file (see above)."""
  try:
    payload = open(path, "rb").read()
  except OSError as error:
    raise FileNotFoundError(f"cannot read learned_optimization meta-parameters {path!r}: "
                            f"{error.strerror}") from error
  checkpoint = lo.gradient_learner.ParameterCheckpoint(params=like, gen_id="", step=0)
  for template, unwrap in ((checkpoint, lambda c: c.params), (like, lambda p: p)):
    try:
      restored = unwrap(flax.serialization.from_bytes(template, payload))
    except (ValueError, KeyError, TypeError):
      continue
    if jax.tree.structure(restored) == jax.tree.structure(like) and all(
        np.shape(a) == np.shape(b) for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(like))):
      return restored
  raise ValueError(f"{path} does not hold meta-parameters of this learned optimizer (expected "
                   f"{sum(np.size(x) for x in jax.tree.leaves(like))} values in "
                   f"{jax.tree.structure(like)})")
