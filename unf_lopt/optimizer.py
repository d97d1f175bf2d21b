"""The nominal-term learned optimizer (UNF paper Eq. 31; Harrison et al. 2022).

    m_g   <- g * m_g + grad                     for g in MOMENTUM_DECAYS and for g0
    W     <- W - alpha * (m_g0 + beta * f(features(W, grad, momenta, t)))

Meta-parameters: the parameters of ``f`` and the scalars ``alpha``, ``beta``
and ``g0``, stored as ``log_alpha``, ``log_beta`` and ``logit_g0`` so that
``alpha, beta > 0`` and ``0 < g0 < 1`` (initial values 0.1, 0.001, 0.9). ``g0``
is learned, so its accumulator is kept apart from the six fixed ones.

Three details where the authors' released code (learned_optimization's
``research/univ_nfn``) differs from the paper's text are options of
`NominalLOpt`, defaulting to the paper's reading: ``momentum="ema"`` (every
momentum, the nominal one included, is ``m <- g * m + (1 - g) * grad``, so the
nominal term starts 10x smaller), ``feature_normalization="clip_per_tensor"``
(see `unf_lopt.features`) and ``initial_beta=1e-4``.

The interface follows learned_optimization (``LearnedOptimizer.init`` ->
meta-params, ``opt_fn(meta_params)`` -> an ``Optimizer`` with pure
``init`` / ``update`` / ``get_params``):

  >>> import jax, jax.numpy as jnp
  >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
  >>> lopt = NominalLOpt("sgdm")
  >>> opt = lopt.opt_fn(lopt.init(jax.random.PRNGKey(0)))
  >>> state = opt.init(params, num_steps=10)
  >>> state = jax.jit(opt.update)(state, jax.tree.map(jnp.ones_like, params), loss=jnp.float32(1.0))
  >>> round(float(opt.get_params(state)["w"][0, 0]), 4)
  0.9

A step whose gradient or loss is not finite is skipped: parameters, momenta
and the step counter stay as they were and ``state.skipped_steps`` counts it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from unf_lopt import features as features_lib
from unf_lopt.spec import FIXED, validate_spec
from unf_lopt.spec_inference import infer_spec
from unf_lopt.update_nets import UPDATE_NETS, UpdateNet

PyTree = Any
KINDS = (*UPDATE_NETS, "sgdm", "adam")
INITIAL_ALPHA, INITIAL_BETA, INITIAL_G0 = 0.1, 1e-3, 0.9
MOMENTUM_KINDS = features_lib.MOMENTUM_KINDS
FEATURE_NORMALIZATIONS = features_lib.FEATURE_NORMALIZATIONS
ADAM_LEARNING_RATE = 1e-3  # optax's usual default; not meta-tuned


@flax.struct.dataclass
class NominalState:
  """State of the nominal-term optimizer; a pytree with a fixed structure."""

  params: PyTree
  momenta: tuple  # one momentum pytree per features.MOMENTUM_DECAYS
  nominal_momentum: PyTree  # the momentum of the learned decay g0
  step: jax.Array
  skipped_steps: jax.Array
  num_steps: jax.Array


@flax.struct.dataclass
class AdamState:
  params: PyTree
  adam: optax.OptState
  step: jax.Array
  skipped_steps: jax.Array
  num_steps: jax.Array


def all_finite(tree: PyTree, loss) -> jax.Array:
  finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))
  if loss is not None:
    finite = finite & jnp.all(jnp.isfinite(loss))
  return finite


def keep_if(condition: jax.Array, new: PyTree, old: PyTree) -> PyTree:
  return jax.tree.map(lambda n, o: jnp.where(condition, n, o), new, old)


def skip_unless_finite(finite: jax.Array, advanced, state):
  """``advanced`` after a finite step; else ``state`` with the skip counted.

  Both are flax struct dataclasses with a ``skipped_steps`` counter.
  """
  kept = keep_if(finite, advanced, state)
  return kept.replace(skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32))


def _counters(num_steps: int | None) -> dict[str, jax.Array]:
  """Initial ``step``, ``skipped_steps`` and ``num_steps`` (-1: not given)."""
  return {"step": jnp.asarray(0, jnp.int32), "skipped_steps": jnp.asarray(0, jnp.int32),
          "num_steps": jnp.asarray(-1 if num_steps is None else num_steps, jnp.int32)}


def _trivial_spec(params: PyTree) -> PyTree:
  return jax.tree.map(lambda p: (FIXED,) * jnp.ndim(p), params)


class NominalOptimizer:
  """An optimizer with fixed meta-parameters (what ``opt_fn`` returns)."""

  def __init__(self, lopt: "NominalLOpt", meta_params: PyTree):
    self.lopt = lopt
    self.meta_params = meta_params

  def init(self, params: PyTree, num_steps: int | None = None, key=None) -> NominalState:
    del key  # deterministic
    zeros = jax.tree.map(jnp.zeros_like, params)
    return NominalState(params=params, momenta=features_lib.init_momenta(params),
                        nominal_momentum=zeros, **_counters(num_steps))

  def get_params(self, state: NominalState) -> PyTree:
    return state.params

  def direction(self, state: NominalState, grads: PyTree) -> tuple[PyTree, NominalState]:
    """The step ``alpha * (m_g0 + beta * f)`` (subtract it) and the advanced state."""
    meta, lopt = self.meta_params, self.lopt
    alpha = jnp.exp(meta["log_alpha"])
    g0 = jax.nn.sigmoid(meta["logit_g0"])
    nominal = jax.tree.map(lambda m, g: features_lib.momentum_step(g0, m, g, lopt.momentum),
                           state.nominal_momentum, grads)
    momenta = features_lib.update_momenta(state.momenta, grads, lopt.momentum)
    if lopt.update_net in UPDATE_NETS:
      beta = jnp.exp(meta["log_beta"])
      inputs = features_lib.build_features(state.params, grads, momenta, state.step,
                                           lopt.feature_normalization)
      spec = lopt.resolve_spec(state.params)
      learned = UpdateNet(lopt.update_net, lopt.hidden, lopt.depth).apply(
          meta["update_net"], inputs, spec)
      step = jax.tree.map(lambda m, f: alpha * (m + beta * f.astype(m.dtype)), nominal, learned)
    else:
      step = jax.tree.map(lambda m: alpha * m, nominal)
    new_state = state.replace(momenta=momenta, nominal_momentum=nominal, step=state.step + 1)
    return step, new_state

  def update(self, state: NominalState, grads: PyTree, loss=None, **unused) -> NominalState:
    del unused
    step, advanced = self.direction(state, grads)
    advanced = advanced.replace(params=jax.tree.map(lambda w, s: w - s.astype(w.dtype),
                                                    state.params, step))
    return skip_unless_finite(all_finite(grads, loss), advanced, state)


class AdamOptimizer:
  """Plain Adam (``ADAM_LEARNING_RATE``) behind the same interface: a fixed baseline."""

  def __init__(self, learning_rate: float = ADAM_LEARNING_RATE):
    self.transform = optax.adam(learning_rate)

  def init(self, params: PyTree, num_steps: int | None = None, key=None) -> AdamState:
    del key
    return AdamState(params=params, adam=self.transform.init(params), **_counters(num_steps))

  def get_params(self, state: AdamState) -> PyTree:
    return state.params

  def update(self, state: AdamState, grads: PyTree, loss=None, **unused) -> AdamState:
    del unused
    updates, adam = self.transform.update(grads, state.adam, state.params)
    advanced = state.replace(params=optax.apply_updates(state.params, updates), adam=adam,
                             step=state.step + 1)
    return skip_unless_finite(all_finite(grads, loss), advanced, state)


class NominalLOpt:
  """The learned optimizer: meta-parameters in, an optimizer out.

  Args:
    update_net: ``"unf"``, ``"nfn"``, ``"deepset"``, ``"sgdm"`` (beta fixed at 0,
      alpha and g0 still learned) or ``"adam"`` (fixed, nothing learned).
    spec: weight-space spec of the optimized parameters, a callable
      ``params -> spec``, or ``"infer"`` for :func:`unf_lopt.infer_spec`.
      Needed for ``unf`` and ``nfn``; others ignore it.
    params_like: the optimized parameters (or arrays of their shapes); needed
      by ``init`` for ``unf`` and ``nfn`` whose size depends on the weight space.
    hidden: width of the update network's DeepSet trunk.
    depth: number of DeepSet layers in the trunk, before the last layer.
    momentum: ``"accumulate"`` (default, the paper's ``m <- g * m + grad``) or
      ``"ema"`` (the authors' code, ``m <- g * m + (1 - g) * grad``), for the
      six feature momenta and the nominal momentum alike; so ``"sgdm"`` with
      ``"ema"`` takes steps ``1 - g0`` times as large (10x smaller at init).
      Not used by ``"adam"``.
    feature_normalization: ``"per_channel"`` (default: each input channel by
      its own second moment per tensor) or ``"clip_per_tensor"`` (the authors'
      code: clip to [-1, 1], then one second moment per tensor over all
      channels, eps 1e-5); see `unf_lopt.features`. Used by the update nets only.
    initial_beta: initial value of the output multiplier ``beta`` (default
      1e-3, the paper's; the authors' code starts at 1e-4). Only the initial
      meta-parameters depend on it.

  Example:
    >>> import jax
    >>> lopt = NominalLOpt("deepset", momentum="ema", feature_normalization="clip_per_tensor",
    ...                    initial_beta=1e-4)
    >>> round(float(jax.numpy.exp(lopt.init(jax.random.PRNGKey(0))["log_beta"])), 6)
    0.0001
    >>> sorted(lopt.options().items())[:3]
    [('depth', 3), ('feature_normalization', 'clip_per_tensor'), ('hidden', 32)]
  """

  def __init__(self, update_net: str = "unf", spec: PyTree | Callable | str | None = None,
               params_like: PyTree | None = None, hidden: int = 32, depth: int = 3,
               momentum: str = "accumulate", feature_normalization: str = "per_channel",
               initial_beta: float = INITIAL_BETA):
    if update_net not in KINDS:
      raise ValueError(f"unknown update_net {update_net!r}; expected one of {KINDS}")
    if update_net in ("unf", "nfn") and spec is None:
      raise ValueError(f"update_net={update_net!r} needs the weight-space spec: pass spec=... "
                       "(a spec pytree, a callable of the params, or 'infer')")
    features_lib.check_choice("momentum", momentum, MOMENTUM_KINDS)
    features_lib.check_choice("feature_normalization", feature_normalization,
                              FEATURE_NORMALIZATIONS)
    try:
      beta_is_positive = 0 < float(initial_beta) < math.inf
    except (TypeError, ValueError):
      beta_is_positive = False
    if not beta_is_positive:
      raise ValueError(f"initial_beta must be a positive number (beta is stored as its log), "
                       f"got {initial_beta!r}")
    self.update_net = update_net
    self.spec = spec
    self.params_like = params_like
    self.hidden = hidden
    self.depth = depth
    self.momentum = momentum
    self.feature_normalization = feature_normalization
    self.initial_beta = float(initial_beta)

  def options(self) -> dict[str, Any]:
    """The constructor options besides ``update_net``, ``spec`` and ``params_like``.

    What checkpoints store, and what rebuilding the optimizer on another
    weight space keeps: ``NominalLOpt(kind, spec=..., params_like=..., **lopt.options())``.
    """
    return {"hidden": self.hidden, "depth": self.depth, "momentum": self.momentum,
            "feature_normalization": self.feature_normalization,
            "initial_beta": self.initial_beta}
  @property
  def name(self) -> str:
    return f"NominalLOpt_{self.update_net}"

  def resolve_spec(self, params: PyTree) -> PyTree:
    if self.spec is None:
      return _trivial_spec(params)
    if isinstance(self.spec, str):
      if self.spec != "infer":
        raise ValueError(f"spec={self.spec!r}: the only string accepted is 'infer'")
      spec = infer_spec(params)
    elif callable(self.spec):
      spec = self.spec(params)
    else:
      spec = self.spec
    validate_spec(spec, params)
    return spec

  def init(self, key: jax.Array) -> PyTree:
    """Initial meta-parameters."""
    if self.update_net == "adam":
      return {}
    meta = {"log_alpha": jnp.asarray(math.log(INITIAL_ALPHA), jnp.float32),
            "logit_g0": jnp.asarray(math.log(INITIAL_G0 / (1 - INITIAL_G0)), jnp.float32)}
    if self.update_net in UPDATE_NETS:
      if self.params_like is None and self.update_net != "deepset":
        raise ValueError(f"NominalLOpt({self.update_net!r}).init needs the parameter shapes: "
                         "pass params_like=... (the optimized params)")
      like = self.params_like if self.params_like is not None else {"w": jnp.zeros((1,))}
      spec = self.resolve_spec(like)
      inputs = jax.tree.map(
          lambda p: jnp.zeros((*jnp.shape(p), features_lib.NUM_FEATURES), jnp.float32), like)
      net = UpdateNet(self.update_net, self.hidden, self.depth)
      meta["update_net"] = jax.jit(lambda k: net.init(k, inputs, spec))(key)
      meta["log_beta"] = jnp.asarray(math.log(self.initial_beta), jnp.float32)
    return meta

  def opt_fn(self, meta_params: PyTree, is_training: bool = False):
    del is_training
    if self.update_net == "adam":
      return AdamOptimizer()
    return NominalOptimizer(self, meta_params)
