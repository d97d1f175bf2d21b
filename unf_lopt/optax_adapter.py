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

  momenta: tuple
  nominal_momentum: PyTree
  step: jax.Array
  skipped_steps: jax.Array
  num_steps: jax.Array


def as_optax(lopt: optimizer_lib.NominalLOpt, meta_params: PyTree,
             num_steps: int | None = None) -> optax.GradientTransformationExtraArgs:
  """Wraps a (trained) learned optimizer for use in ``optax.chain``.

  Args:
    lopt: the learned optimizer (its kind, spec and architecture).
    meta_params: its meta-parameters, e.g. from :func:`unf_lopt.load_checkpoint`.
    num_steps: the planned training length, kept in the state for update
      networks that condition on it.

  Returns:
    A gradient transformation; ``adam`` gives optax's Adam at the baseline rate.
  """
  if lopt.update_net == "adam":
    return optax.with_extra_args_support(optax.adam(optimizer_lib.ADAM_LEARNING_RATE))
  opt = lopt.opt_fn(meta_params)

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
    step, advanced = opt.direction(full, updates)
    finite = optimizer_lib.all_finite(updates, value)
    new_updates = jax.tree.map(lambda s, p: jnp.where(finite, -s, 0).astype(p.dtype), step, params)
    new_state = state.replace(momenta=advanced.momenta, nominal_momentum=advanced.nominal_momentum,
                              step=advanced.step)
    return new_updates, optimizer_lib.skip_unless_finite(finite, new_state, state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
