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
* :func:`lo_learned_optimizer`: learned_optimization's learned optimizers
  (``MLPLOpt`` ...) with their meta-parameters, for ``unf-evaluate --optimizers
  lo:mlp_lopt``.
* ``lo``: the learned_optimization modules these use, imported after
  :func:`apply_jax_compat`, and :func:`resolve` for ``module.Class`` names.

Tasks are application code: ``unf_lopt.tasks.lo_tasks`` adapts our tasks to
learned_optimization and back (``get_task("lo:NAME")``), on top of this module.

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

import importlib
import pathlib
import types
from typing import Any

import flax.serialization
import flax.struct
import jax
import jax.tree_util
import numpy as np
from absl import logging as absl_logging

import unf_lopt as U

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

    lopt = U.NominalLOpt("unf", spec=("coordinates",), params_like=jnp.zeros(10))
    family = lo.quadratics.FixedDimQuadraticFamily(10)  # our tasks: tasks.lo_tasks
    pes = lo.truncated_pes.TruncatedPES(family, as_lo_learned_optimizer(lopt), ...)
  """
  if not isinstance(lopt, U.NominalLOpt):
    raise TypeError(f"expected a unf_lopt.NominalLOpt, got {type(lopt).__name__}")
  return LearnedOptimizerAdapter(lopt, initial_meta_params)


def resolve(root: str, dotted: str, what: str, known: list[str]) -> Any:
  """The attribute ``root.dotted`` (``dotted`` is ``module.Attribute``).

  Args:
    root: a learned_optimization package, e.g. ``"learned_optimization.tasks"``.
    dotted: ``module.Attribute`` below ``root``.
    what: what is looked up, for the message (``"task"``).
    known: the short names the caller also accepts, listed in the message.

  Raises:
    KeyError: naming ``dotted`` and listing ``known`` when there is no such attribute.
  """
  module_name, _, attribute = dotted.rpartition(".")
  try:
    return getattr(importlib.import_module(f"{root}.{module_name}"), attribute)
  except (ImportError, AttributeError, ValueError) as error:
    raise KeyError(f"unknown learned_optimization {what} {dotted!r} ({error}); use one of "
                   f"{', '.join(known)} or a path under {root} such as "
                   f"'{root.rsplit('.', 1)[-1]}.module.Class'") from error


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
  factory = resolve("learned_optimization.learned_optimizers", dotted, "learned optimizer",
                     sorted(LO_OPTIMIZERS))
  lopt = factory()
  meta = lopt.init(jax.random.PRNGKey(seed))
  if path:
    meta = load_lo_meta_params(path, meta)
  return lopt, meta


def load_lo_meta_params(path: str, like: PyTree) -> PyTree:
  """Meta-parameters shaped like ``like`` from a flax-serialised file (see above)."""
  try:
    payload = pathlib.Path(path).read_bytes()
  except OSError as error:
    raise FileNotFoundError(f"cannot read learned_optimization meta-parameters {path!r}: "
                            f"{error.strerror}") from error
  checkpoint = lo.gradient_learner.ParameterCheckpoint(params=like, gen_id="", step=0)
  for template, unwrap in ((checkpoint, lambda c: c.params), (like, lambda p: p)):
    try:
      restored = unwrap(flax.serialization.from_bytes(template, payload))
    except (ValueError, KeyError, TypeError):
      continue
    pairs = zip(jax.tree.leaves(restored), jax.tree.leaves(like))
    if jax.tree.structure(restored) == jax.tree.structure(like) and all(
        np.shape(a) == np.shape(b) for a, b in pairs):
      return restored
  raise ValueError(f"{path} does not hold meta-parameters of this learned optimizer (expected "
                   f"{sum(np.size(x) for x in jax.tree.leaves(like))} values in "
                   f"{jax.tree.structure(like)})")
