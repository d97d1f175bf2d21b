"""Per-entry input features of the update network.

For every parameter entry the update network sees 19 channels:

* the weight, the gradient, and six momentum accumulators
  ``m <- g * m + grad`` with ``g`` in ``MOMENTUM_DECAYS`` (the accumulator form
  of the paper's update rule, not an EMA);
* an 11-dimensional embedding of the step, ``tanh(t / tau - 1)`` for ``tau``
  in ``TIME_SCALES`` (learned_optimization's choice; the paper does not give
  the frequencies), identical for every entry.

The first eight channels are normalised per tensor and channel by their
second moment, ``x / sqrt(mean(x**2) + eps)``. A mean over all entries of a
tensor is invariant to permuting them, so equivariance is kept; it makes the
features scale-free across tasks and through training (MLPLOpt does the same).

Example:
  >>> import jax.numpy as jnp
  >>> params = {"w": jnp.ones((3, 2))}
  >>> momenta = init_momenta(params)
  >>> momenta = update_momenta(momenta, params)
  >>> build_features(params, params, momenta, step=0)["w"].shape
  (3, 2, 19)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any

MOMENTUM_DECAYS = (0.1, 0.5, 0.9, 0.99, 0.999, 0.9999)
TIME_SCALES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5)
NUM_FEATURES = 2 + len(MOMENTUM_DECAYS) + len(TIME_SCALES)  # 19
NORMALIZATION_EPS = 1e-12


def init_momenta(params: PyTree) -> tuple[PyTree, ...]:
  """One zero accumulator per momentum decay."""
  return tuple(jax.tree.map(jnp.zeros_like, params) for _ in MOMENTUM_DECAYS)


def update_momenta(momenta: tuple[PyTree, ...], grads: PyTree) -> tuple[PyTree, ...]:
  """``m <- g * m + grad`` for every decay ``g``."""
  return tuple(jax.tree.map(lambda m, g, d=decay: d * m + g, moment, grads)
               for decay, moment in zip(MOMENTUM_DECAYS, momenta))


def time_embedding(step: jax.Array) -> jax.Array:
  """``tanh(step / tau - 1)`` for every ``tau`` in ``TIME_SCALES``: shape ``[11]``."""
  return jnp.tanh(jnp.asarray(step, jnp.float32) / jnp.asarray(TIME_SCALES) - 1.0)


def second_moment_normalize(x: jax.Array) -> jax.Array:
  """Divides every channel of ``x`` (``[*shape, C]``) by its root mean square."""
  axes = tuple(range(x.ndim - 1))
  return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=axes, keepdims=True) + NORMALIZATION_EPS)


def build_features(params: PyTree, grads: PyTree, momenta: tuple[PyTree, ...],
                   step: jax.Array) -> PyTree:
  """The 19-channel features of every entry: ``[*shape, 19]`` per tensor."""
  clock = time_embedding(step)

  def per_tensor(w, g, *moments):
    raw = jnp.stack([w, g, *moments], axis=-1).astype(jnp.float32)
    normalized = second_moment_normalize(raw)
    return jnp.concatenate([normalized, jnp.broadcast_to(clock, (*w.shape, clock.size))], -1)

  return jax.tree.map(per_tensor, params, grads, *momenta)
