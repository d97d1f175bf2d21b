"""A learned optimizer as an ``optax`` gradient transformation.

``as_optax`` turns ``(lopt, meta_params)`` into an
``optax.GradientTransformationExtraArgs`` whose ``update`` returns *updates*
(to be added to the params), so it composes with the rest of optax:

  >>> import jax, jax.numpy as jnp, optax
  >>> import unf_lopt
  >>> lopt = unf_lopt.NominalLOpt("sgdm")
  >>> tx = optax.chain(optax.clip_by_global_norm(1.0),
  ...                  unf_lopt.as_optax(lopt, lopt.init(jax.random.PRNGKey(0))))
  >>> params = {"w": jnp.ones(3)}
  >>> state = tx.init(params)
  >>> updates, state = tx.update({"w": jnp.ones(3)}, state, params)
  >>> updates["w"].round(4)
  Array([-0.0577, -0.0577, -0.0577], dtype=float32)

The update network reads the weights, so ``update`` needs ``params``. ``value``
(the loss) is optional; when given, a non-finite loss skips the step like a
non-finite gradient does: zero updates, unchanged state, ``skipped_steps``
counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from unf_lopt import optimizer as optimizer_lib

PyTree = Any


@flax.struct.dataclass
class LearnedOptimizerState:
  """Optimizer state without the params (optax passes those in)."""

  momenta: PyTree  # per tensor [*shape, 6] (features.init_momenta)
  nominal_momentum: PyTree
  step: jax.Array
  skipped_steps: jax.Array
  num_steps: jax.Array


def as_optax(lopt: optimizer_lib.NominalLOpt, meta_params: PyTree,
             num_steps: int | None = None, *, spec: PyTree | Callable | str | None = None,
             apply_fn: Callable | None = None,
             example_args: tuple = ()) -> optax.GradientTransformationExtraArgs:
  """Wraps a (trained) learned optimizer for use in ``optax.chain``.

  A UNF or NFN optimizer trained on one model applies to every model whose
  weight space has the structure of the one it was trained on, up to widths
  and tensor names (`unf_lopt.spec_matching`): a shipped MLP optimizer trains
  any 2-layer MLP, ``nn.Sequential`` or not. Without ``spec`` or ``apply_fn``
  the correspondence is read off the shapes (a structural guess, harmless for
  an optimizer); either makes it exact. A model of another structure gets a
  :class:`unf_lopt.SpecError` that says what differs. ``deepset``, ``sgdm`` and
  ``adam`` fit any model.

  Args:
    lopt: the learned optimizer (its kind, spec and architecture).
    meta_params: its meta-parameters, e.g. from :func:`unf_lopt.load_checkpoint`.
    num_steps: the planned training length, kept in the state for update
      networks that condition on it.
    spec: the spec of the optimized model (a pytree, a function of the params,
      or ``"infer"``: infer it from ``apply_fn``). When ``lopt`` holds a trained
      spec, the model's spec is matched onto it; otherwise it is the spec the
      update network uses.
    apply_fn: the model, ``apply_fn(params, *example_args)``. Its spec is
      inferred with :func:`unf_lopt.infer_spec` (unless ``spec`` is given) and
      checked with :func:`unf_lopt.verify_spec` once, when the transformation
      first meets the params (eagerly; random arrays stand in for params that
      are tracers). The shipped optimizers were trained with the data inputs
      and outputs permuted, as in the UNF paper; a spec with them fixed cannot
      have their structure, so for matching the spec is inferred with
      ``fixed_io=False`` (the verified spec is the ``fixed_io=True`` one, the
      model's true symmetry).
    example_args: the inputs ``apply_fn`` is traced and verified on.

  Returns:
    A gradient transformation; ``adam`` gives optax's Adam at the baseline rate.

  Raises:
    ValueError: ``spec="infer"`` without an ``apply_fn``.
  """
  if lopt.update_net == "adam":
    return optax.with_extra_args_support(optax.adam(optimizer_lib.ADAM_LEARNING_RATE))
  if isinstance(spec, str) and spec == "infer" and apply_fn is None and lopt.apply_fn is None:
    raise ValueError("as_optax(spec='infer') infers the model's spec from its apply function: "
                     "pass apply_fn=... (and example_args=...), or a spec")
  if spec is None and apply_fn is None:
    opt = lopt.opt_fn(meta_params)
  else:
    opt = optimizer_lib.NominalOptimizer(lopt, meta_params, spec=spec, apply_fn=apply_fn,
                                         example_args=example_args)

  def init_fn(params):
    state = opt.init(params, num_steps=num_steps)
    return LearnedOptimizerState(state.momenta, state.nominal_momentum, state.step,
                                 state.skipped_steps, state.num_steps)

  def update_fn(updates, state, params=None, value=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("as_optax(...).update needs params: the update network reads the weights")
    full = optimizer_lib.NominalState(params=params, momenta=state.momenta,
                                      nominal_momentum=state.nominal_momentum, step=state.step,
                                      skipped_steps=state.skipped_steps, num_steps=state.num_steps)
    finite = optimizer_lib.all_finite(updates, value)

    def advance():
      step, advanced = opt.direction(full, updates)
      return (jax.tree.map(lambda s, p: (-s).astype(p.dtype), step, params),
              state.replace(momenta=advanced.momenta,
                            nominal_momentum=advanced.nominal_momentum, step=advanced.step))
    skipped = (jax.tree.map(jnp.zeros_like, params), state)
    new_updates, kept = optimizer_lib.keep_if(finite, advance, skipped)
    return new_updates, optimizer_lib.count_skip(finite, kept, state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
