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
from collections.abc import Callable, Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from unf_lopt import features as features_lib
from unf_lopt import spec_matching
from unf_lopt.spec import FIXED, SpecError, path_to_str, validate_spec
from unf_lopt.spec_inference import infer_spec
from unf_lopt.update_nets import TENSOR_PAIRS, UPDATE_NETS, UpdateNet

PyTree = Any
KINDS = (*UPDATE_NETS, "sgdm", "adam")
INITIAL_ALPHA, INITIAL_BETA, INITIAL_G0 = 0.1, 1e-3, 0.9
MOMENTUM_KINDS = features_lib.MOMENTUM_KINDS
FEATURE_NORMALIZATIONS = features_lib.FEATURE_NORMALIZATIONS
# Fixed axes of a tensor up to this many entries fold into the unf head's channels.
DEFAULT_MAX_FOLDED_SIZE = 16
ADAM_LEARNING_RATE = 1e-3  # optax's usual default; not meta-tuned
# Models with at least this many parameters get their update network's weights behind an
# optimization barrier (see `NominalOptimizer.direction`).
CONSTANT_FOLDING_BARRIER_ENTRIES = 100_000


@flax.struct.dataclass
class NominalState:
  """State of the nominal-term optimizer; a pytree with a fixed structure."""

  params: PyTree
  momenta: PyTree  # per tensor [*shape, 6]: one channel per features.MOMENTUM_DECAYS
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
  # The largest magnitude is finite exactly when every entry is (max propagates NaN): one
  # reduction per tensor, where isfinite-then-all compiled to two kernels.
  largest = [jnp.max(jnp.abs(x)) for x in jax.tree.leaves(tree) if jnp.size(x)]
  finite = jnp.isfinite(jnp.max(jnp.asarray(largest))) if largest else jnp.asarray(True)
  if loss is not None:
    finite = finite & jnp.all(jnp.isfinite(loss))
  return finite


def keep_if(condition: jax.Array, compute_new: Callable[[], PyTree], old: PyTree) -> PyTree:
  """``compute_new()`` where the scalar ``condition`` holds, else ``old``.

  One conditional with the computation inside it, rather than a select per
  state leaf after it: each select was a kernel for XLA to compile (297 on
  the Transformer task, a third of its step's) and read its leaf twice. Under
  ``vmap`` (PES) both branches run and it becomes the per-leaf select again.
  """
  return jax.lax.cond(condition, lambda kept: compute_new(), lambda kept: kept, old)


def skip_unless_finite(finite: jax.Array, advance: Callable[[], Any], state):
  """``advance()`` (the advanced state) after a finite step; else ``state``, the skip counted.

  Both are flax struct dataclasses with a ``skipped_steps`` counter;
  ``advance`` is only run (traced into the conditional) here.
  """
  return count_skip(finite, keep_if(finite, advance, state), state)


def count_skip(finite: jax.Array, kept, state):
  """``kept`` with ``state``'s ``skipped_steps`` counter, plus one unless ``finite``."""
  return kept.replace(skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32))


def _counters(num_steps: int | None) -> dict[str, jax.Array]:
  """Initial ``step``, ``skipped_steps`` and ``num_steps`` (-1: not given)."""
  return {"step": jnp.asarray(0, jnp.int32), "skipped_steps": jnp.asarray(0, jnp.int32),
          "num_steps": jnp.asarray(-1 if num_steps is None else num_steps, jnp.int32)}


def _trivial_spec(params: PyTree) -> PyTree:
  return jax.tree.map(lambda p: (FIXED,) * jnp.ndim(p), params)


def _is_spec_tree(spec: Any) -> bool:
  """True for a spec pytree (not None, ``"infer"`` or a function of the params)."""
  return spec is not None and not isinstance(spec, str) and not callable(spec)


def _concrete(params: PyTree) -> PyTree:
  """``params``, or random arrays of their shapes where they are tracers (inside jit)."""
  rng = np.random.default_rng(0)

  def concrete(p):
    if not isinstance(p, jax.core.Tracer) and not isinstance(p, jax.ShapeDtypeStruct):
      return p
    dtype = np.dtype(p.dtype)
    if not np.issubdtype(dtype, np.floating):
      return np.zeros(p.shape, dtype)
    return rng.standard_normal(p.shape).astype(dtype)
  return jax.tree.map(concrete, params)


def _infer_with(params: PyTree, apply_fn: Callable, example_args: tuple, fixed_io: bool):
  return infer_spec(params, apply_fn=apply_fn, example_args=tuple(example_args),
                    fixed_io=fixed_io)


def _fits(spec: PyTree, params: PyTree) -> bool:
  try:
    validate_spec(spec, params)
  except SpecError:
    return False
  return True


class NominalOptimizer:
  """An optimizer with fixed meta-parameters (what ``opt_fn`` returns).

  ``spec``, ``apply_fn`` and ``example_args`` describe the optimized model
  (see :func:`unf_lopt.as_optax`); by default the ``lopt``'s own are used.
  """

  def __init__(self, lopt: "NominalLOpt", meta_params: PyTree, *,
               spec: PyTree | Callable | str | None = None, apply_fn: Callable | None = None,
               example_args: tuple = ()):
    self.lopt = lopt
    self.meta_params = meta_params
    self.model_spec = spec
    self.apply_fn_given = apply_fn is not None
    self.apply_fn = apply_fn if apply_fn is not None else lopt.apply_fn
    self.example_args = tuple(example_args) if apply_fn is not None else lopt.example_args
    self._fits: dict[Any, tuple[PyTree, spec_matching.SpecMatch | None]] = {}

  def fit(self, params: PyTree) -> tuple[PyTree, spec_matching.SpecMatch | None]:
    """The spec the update network runs with on ``params``, and the match if it needs one.

    With a match, the network runs on ``match.to_template(features)`` and its
    outputs come back through ``match.from_template``. Computed once per
    params structure (the first call infers and verifies; it may be eager).
    """
    leaves, treedef = jax.tree.flatten(params)
    key = (treedef, tuple((tuple(np.shape(p)), str(jnp.result_type(p))) for p in leaves))
    if key not in self._fits:
      self._fits[key] = self._fit(params)
    return self._fits[key]

  def _fit(self, params: PyTree) -> tuple[PyTree, spec_matching.SpecMatch | None]:
    lopt = self.lopt
    template = lopt.spec if _is_spec_tree(lopt.spec) else None
    if template is None:  # the spec is made from the params: nothing to match
      source = self.model_spec if self.model_spec is not None else lopt.spec
      return self._model_specs(source, params, strict=self.model_spec is not None)[-1], None
    if self.model_spec is None and not self.apply_fn_given and _fits(template, params):
      if self.apply_fn is not None:  # NominalLOpt(spec=..., apply_fn=...) checks its own spec
        self._verify(params, template)
      return template, None
    if self.model_spec is None and self.apply_fn is None:  # a structural guess
      return template, self._checked(spec_matching.match_spec(template, params), params)
    source = self.model_spec if self.model_spec is not None else "infer"
    candidates = self._model_specs(source, params, alternatives=True)
    first_error = None
    for candidate in candidates:
      try:
        match = spec_matching.match_spec(template, params, spec=candidate)
        break
      except SpecError as error:
        first_error = first_error or error
    else:
      raise first_error
    return template, (None if match.is_identity else self._checked(match, params))

  def _model_specs(self, source: Any, params: PyTree, *, strict: bool = True,
                   alternatives: bool = False) -> list[PyTree]:
    """The model's spec (given, or inferred; verified), after alternatives to match first.

    Shipped templates permute the data axes as the paper does, which a spec with
    fixed inputs and outputs cannot match; so with ``alternatives`` an inferred
    spec comes after its permuted-io version, which is tried first. The
    verified spec is the fixed-io one, the model's true symmetry.
    """
    apply_fn, args = self.apply_fn, self.example_args
    if isinstance(source, str) and source != "infer":
      raise ValueError(f"spec={source!r}: the only string accepted is 'infer'")
    others = []
    if source is None:
      spec = _trivial_spec(params)
    elif isinstance(source, str):
      if apply_fn is not None:
        spec = _infer_with(params, apply_fn, args, fixed_io=True)
        if alternatives:
          try:
            others = [_infer_with(params, apply_fn, args, fixed_io=False)]
          except SpecError:
            pass  # only the fixed-io spec can be inferred: match with that one
      elif strict:
        raise ValueError("spec='infer' infers the spec from the model: pass apply_fn=... "
                         "(and example_args=...), or a spec")
      else:
        spec = infer_spec(params)
    else:
      spec = source(params) if callable(source) else source
    validate_spec(spec, params)
    if apply_fn is not None:
      self._verify(params, spec)
    return [*others, spec]

  def _verify(self, params: PyTree, spec: PyTree) -> None:
    from unf_lopt.spec_verify import verify_spec  # pylint: disable=g-import-not-at-top
    verify_spec(self.apply_fn, _concrete(params), spec, *self.example_args)

  def _checked(self, match: spec_matching.SpecMatch, params: PyTree) -> spec_matching.SpecMatch:
    """``match``, once the meta-parameters' shapes fit the weight space it gives."""
    meta = self.meta_params.get("update_net") if isinstance(self.meta_params, Mapping) else None
    if meta is None:
      return match
    lopt = self.lopt
    shapes = match.to_template(jax.tree.map(
        lambda p: jax.ShapeDtypeStruct((*np.shape(p), features_lib.NUM_FEATURES), jnp.float32),
        params))
    net = lopt.network()
    expected = jax.eval_shape(lambda x: net.init(jax.random.PRNGKey(0), x, match.template_spec),
                              shapes)
    shape_of = lambda tree: {path_to_str(p): tuple(np.shape(x))
                             for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
    got, wanted = shape_of(meta), shape_of(expected)
    if got != wanted:
      differing = sorted(k for k in set(got) | set(wanted) if got.get(k) != wanted.get(k))
      # A tensor's own bias in the head has one entry per folded fixed index: those name
      # the culprits (every kernel that reads them differs too).
      culprits = sorted(user for user, template in match.tensor_map.items()
                        if any(k.endswith(f"bias[{template}]") for k in differing))
      raise SpecError(
          f"this {lopt.update_net} optimizer's meta-parameters do not fit your weight space "
          f"although its structure matches: the fixed axes of {culprits or differing} have other "
          "sizes than the ones it was trained on (small fixed axes fold into the update "
          "network's channels). The deepset_* pretrained optimizers fit any model.")
    return match

  def init(self, params: PyTree, num_steps: int | None = None, key=None) -> NominalState:
    del key  # deterministic
    if self.lopt.update_net in ("unf", "nfn"):
      self.fit(params)  # eagerly where possible: infers and verifies a model's spec once
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
      # The time channels go in as one vector (`UpdateNet`'s fused trunk).
      inputs = features_lib.entry_features(state.params, grads, momenta,
                                           lopt.feature_normalization)
      if lopt.update_net == "deepset":  # a spec changes nothing: any weight space fits
        spec, match = _trivial_spec(state.params), None
      else:
        spec, match = self.fit(state.params)
      if match is not None:  # a trained optimizer on another weight space of its structure
        inputs = match.to_template(inputs)
      weights = meta["update_net"]
      if optax.tree_utils.tree_size(state.params) >= CONSTANT_FOLDING_BARRIER_ENTRIES:
        # Where the weights are constants (a trained optimizer in a user's jit), XLA folds
        # each basis term's slice of them into a constant of its own and splits the UNF
        # layer's matmuls per term: twice the compile time on the Transformer task. The
        # barrier costs the slices at run time instead (~50 us a step), which only large
        # models do not notice.
        weights = jax.lax.optimization_barrier(weights)
      learned = lopt.network().apply(
          weights, inputs, spec, features_lib.time_embedding(state.step))
      if match is not None:
        learned = match.from_template(learned)
      step = jax.tree.map(lambda m, f: alpha * (m + beta * f.astype(m.dtype)), nominal, learned)
    else:
      step = jax.tree.map(lambda m: alpha * m, nominal)
    new_state = state.replace(momenta=momenta, nominal_momentum=nominal, step=state.step + 1)
    return step, new_state

  def update(self, state: NominalState, grads: PyTree, loss=None, **unused) -> NominalState:
    del unused

    def advance():
      step, advanced = self.direction(state, grads)
      return advanced.replace(params=jax.tree.map(lambda w, s: w - s.astype(w.dtype),
                                                  state.params, step))
    return skip_unless_finite(all_finite(grads, loss), advance, state)


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

    def advance():
      updates, adam = self.transform.update(grads, state.adam, state.params)
      return state.replace(params=optax.apply_updates(state.params, updates), adam=adam,
                           step=state.step + 1)
    return skip_unless_finite(all_finite(grads, loss), advance, state)


class NominalLOpt:
  """The learned optimizer: meta-parameters in, an optimizer out.

  Args:
    update_net: ``"unf"``, ``"nfn"``, ``"deepset"``, ``"sgdm"`` (beta fixed at 0,
      alpha and g0 still learned) or ``"adam"`` (fixed, nothing learned).
    spec: weight-space spec of the optimized parameters, a callable
      ``params -> spec``, or ``"infer"`` for :func:`unf_lopt.infer_spec`.
      Needed for ``unf`` and ``nfn``; others ignore it. A spec pytree is also a
      template: params it does not fit but whose weight space has its structure
      (other widths and tensor names) are matched onto it
      (:func:`unf_lopt.match_spec`), so a trained optimizer transfers.
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
    apply_fn: the optimized model, ``apply_fn(params, *example_args)``. With
      ``spec="infer"`` the spec is inferred from it (:func:`unf_lopt.infer_spec`,
      data inputs and outputs fixed); for ``unf`` and ``nfn`` the resolved spec
      is checked with :func:`unf_lopt.verify_spec` once, when the optimizer first
      meets the params (eagerly, with random arrays of their shapes if they are
      tracers). When ``spec`` is a trained template that the params do not fit,
      the model's spec inferred from ``apply_fn`` makes the match exact (see
      :func:`unf_lopt.as_optax`). Not stored in checkpoints.
    example_args: the inputs ``apply_fn`` is traced and verified on.
    max_folded_size: how the ``unf`` head treats fixed axes (`UpdateNet`): the
      fixed axes of a tensor fold into channels while they hold at most this
      many entries (default ``DEFAULT_MAX_FOLDED_SIZE`` = 16: 3x3 filter
      taps and 10 classes fold); larger ones are shared with positional
      channels, so the meta-parameters do not grow with them. ``None`` folds
      every fixed axis (the legacy net, what checkpoints without the option
      were trained with).
    tensor_pairs: ``"all"`` (default) or ``"linked"``, the ``unf`` head's
      cross-tensor terms (`unf_lopt.layers.UNFLinear`); ``"linked"`` bounds
      the head on weight spaces with many tensors (a ResNet with BatchNorm).
    nfn_head_bias: whether the ``nfn`` head has a bias (`UpdateNet`; default
      True). Table 3's NFN rows: the MLP's 3,783 with it, the CNN's 41,603
      without (``False``). Other heads ignore it.
    identity_share: the ``unf`` head's initialisation (`UpdateNet`): ``None``
      (default) draws every basis term alike; a number in (0, 1) gives the
      identity term, the pointwise map a ``deepset`` head computes, that share
      of the initial output variance. Only the initial meta-parameters depend
      on it. Other heads ignore it.

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
               initial_beta: float = INITIAL_BETA, apply_fn: Callable | None = None,
               example_args: tuple = (), max_folded_size: int | None = DEFAULT_MAX_FOLDED_SIZE,
               tensor_pairs: str = "all", nfn_head_bias: bool = True,
               identity_share: float | None = None):
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
    if max_folded_size is not None and (isinstance(max_folded_size, bool)
                                        or not isinstance(max_folded_size, int)
                                        or max_folded_size < 1):
      raise ValueError(f"max_folded_size must be a positive int or None, got {max_folded_size!r}")
    features_lib.check_choice("tensor_pairs", tensor_pairs, TENSOR_PAIRS)
    self.max_folded_size = max_folded_size
    self.tensor_pairs = tensor_pairs
    if not isinstance(nfn_head_bias, bool):
      raise ValueError(f"nfn_head_bias must be True or False, got {nfn_head_bias!r}")
    self.nfn_head_bias = nfn_head_bias
    if identity_share is not None and (isinstance(identity_share, bool)
                                       or not isinstance(identity_share, (int, float))
                                       or not 0.0 < identity_share < 1.0):
      raise ValueError(f"identity_share must be None or a number in (0, 1), got "
                       f"{identity_share!r}")
    self.identity_share = None if identity_share is None else float(identity_share)
    if apply_fn is not None and not callable(apply_fn):
      raise TypeError(f"apply_fn must be a function of (params, *example_args), got "
                      f"{type(apply_fn).__name__}")
    self.apply_fn = apply_fn
    self.example_args = tuple(example_args)

  def options(self) -> dict[str, Any]:
    """The constructor options besides ``update_net``, ``spec`` and ``params_like``.

    What checkpoints store, and what rebuilding the optimizer on another
    weight space keeps: ``NominalLOpt(kind, spec=..., params_like=..., **lopt.options())``.
    """
    return {"hidden": self.hidden, "depth": self.depth, "momentum": self.momentum,
            "feature_normalization": self.feature_normalization,
            "initial_beta": self.initial_beta, "max_folded_size": self.max_folded_size,
            "tensor_pairs": self.tensor_pairs, "nfn_head_bias": self.nfn_head_bias,
            "identity_share": self.identity_share}

  def network(self) -> UpdateNet:
    """The update network ``f`` with this optimizer's architecture options."""
    return UpdateNet(self.update_net, self.hidden, self.depth,
                     nfn_head_bias=self.nfn_head_bias, max_folded_size=self.max_folded_size,
                     tensor_pairs=self.tensor_pairs, identity_share=self.identity_share)

  @property
  def name(self) -> str:
    return f"NominalLOpt_{self.update_net}"

  def resolve_spec(self, params: PyTree) -> PyTree:
    if self.spec is None:
      return _trivial_spec(params)
    if isinstance(self.spec, str):
      if self.spec != "infer":
        raise ValueError(f"spec={self.spec!r}: the only string accepted is 'infer'")
      spec = (_infer_with(params, self.apply_fn, self.example_args, fixed_io=True)
              if self.apply_fn is not None else infer_spec(params))
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
      # deepset's size does not depend on the weight space, and it ignores the spec.
      spec = _trivial_spec(like) if self.update_net == "deepset" else self.resolve_spec(like)
      inputs = jax.tree.map(
          lambda p: jnp.zeros((*jnp.shape(p), features_lib.NUM_FEATURES), jnp.float32), like)
      net = self.network()
      meta["update_net"] = jax.jit(lambda k: net.init(k, inputs, spec))(key)
      meta["log_beta"] = jnp.asarray(math.log(self.initial_beta), jnp.float32)
    return meta

  def opt_fn(self, meta_params: PyTree, is_training: bool = False):
    del is_training
    if self.update_net == "adam":
      return AdamOptimizer()
    return NominalOptimizer(self, meta_params)
