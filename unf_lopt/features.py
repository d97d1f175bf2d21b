"""Per-entry input features of the update network.

For every parameter entry the update network sees 19 channels:

* the weight, the gradient, and six momenta with decay ``g`` in
  ``MOMENTUM_DECAYS``: by default accumulators ``m <- g * m + grad`` (the
  paper's update rule), or with ``momentum="ema"`` exponential moving averages
  ``m <- g * m + (1 - g) * grad`` (the authors' released code,
  learned_optimization's ``rolling_mom``);
* an 11-dimensional embedding of the step, ``tanh(t / tau - 1)`` for ``tau``
  in ``TIME_SCALES`` (learned_optimization's choice; the paper does not give
  the frequencies), identical for every entry.

The first eight channels are normalised per tensor, in one of two ways
(``FEATURE_NORMALIZATIONS``):

* ``"per_channel"`` (default): every channel by its own second moment,
  ``x / sqrt(mean(x**2) + 1e-12)`` with the mean over the tensor's entries
  (MLPLOpt does the same);
* ``"clip_per_tensor"`` (the authors' released code): clip to ``[-1, 1]``, then
  divide by ONE second moment taken over all entries and all eight channels
  together, ``x / sqrt(mean(x**2) + 1e-5)``, so the channels keep their
  relative sizes.

A mean over all entries of a tensor is invariant to permuting them, so either
way equivariance is kept, and the features are scale-free across tasks and
through training.

Example:
  >>> import jax.numpy as jnp
  >>> params = {"w": jnp.ones((3, 2))}
  >>> momenta = init_momenta(params)
  >>> momenta = update_momenta(momenta, params)
  >>> momenta["w"].shape  # the six momenta of every entry, last
  (3, 2, 6)
  >>> build_features(params, params, momenta, step=0)["w"].shape
  (3, 2, 19)
  >>> ema = update_momenta(init_momenta(params), params, momentum="ema")
  >>> round(float(ema["w"][0, 0, 2]), 6)  # g = 0.9: (1 - 0.9) * grad
  0.1
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any

MOMENTUM_DECAYS = (0.1, 0.5, 0.9, 0.99, 0.999, 0.9999)
TIME_SCALES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5)
# The channels that differ between entries (weight, gradient, momenta) come
# first; the time embedding, the same for every entry, last.
NUM_ENTRY_FEATURES = 2 + len(MOMENTUM_DECAYS)  # 8
NUM_FEATURES = NUM_ENTRY_FEATURES + len(TIME_SCALES)  # 19
NORMALIZATION_EPS = 1e-12
# learned_optimization's `_second_moment_normalizer` default, used by "clip_per_tensor".
CLIP_PER_TENSOR_EPS = 1e-5
# "accumulate": m <- g m + grad (ours, the paper's formula); "ema": m <- g m + (1 - g) grad.
MOMENTUM_KINDS = ("accumulate", "ema")
FEATURE_NORMALIZATIONS = ("per_channel", "clip_per_tensor")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
  """Raises ValueError naming ``name`` unless ``value`` is one of ``choices``."""
  if value not in choices:
    raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def momentum_step(decay, moment, grad, momentum: str = "accumulate"):
  """One momentum update: ``decay * moment + grad``, or ``... + (1 - decay) * grad`` for "ema"."""
  check_choice("momentum", momentum, MOMENTUM_KINDS)
  if momentum == "ema":
    return decay * moment + (1 - decay) * grad
  return decay * moment + grad


def init_momenta(params: PyTree) -> PyTree:
  """Zero momenta: per tensor one ``[*shape, 6]`` array, a channel per momentum decay.

  The six momenta of a tensor live in one array, so that each step updates them
  in one kernel (six pytrees made six kernels per tensor for XLA to compile
  and launch), and the features take them as one block of channels.
  """
  return jax.tree.map(lambda p: jnp.zeros((*jnp.shape(p), len(MOMENTUM_DECAYS)),
                                          jnp.result_type(p)), params)


def update_momenta(momenta: PyTree, grads: PyTree, momentum: str = "accumulate") -> PyTree:
  """`momentum_step` for every decay in ``MOMENTUM_DECAYS`` (the last axis of each tensor)."""
  def per_tensor(m, g):
    decays = jnp.asarray(MOMENTUM_DECAYS, m.dtype)
    return momentum_step(decays, m, jnp.expand_dims(g, -1).astype(m.dtype), momentum)
  return jax.tree.map(per_tensor, momenta, grads)


def time_embedding(step: jax.Array) -> jax.Array:
  """``tanh(step / tau - 1)`` for every ``tau`` in ``TIME_SCALES``: shape ``[11]``."""
  return jnp.tanh(jnp.asarray(step, jnp.float32) / jnp.asarray(TIME_SCALES) - 1.0)


def second_moment_normalize(x: jax.Array) -> jax.Array:
  """Divides every channel of ``x`` (``[*shape, C]``) by its root mean square."""
  axes = tuple(range(x.ndim - 1))
  return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=axes, keepdims=True) + NORMALIZATION_EPS)


def clip_per_tensor_normalize(x: jax.Array) -> jax.Array:
  """Clips ``x`` to ``[-1, 1]``, then divides it by its root mean square over ALL axes.

  One scale for the whole tensor, channels included (the authors' released
  code, ``ResidualOpt`` in learned_optimization's ``research/univ_nfn``).

  Example:
    >>> import jax.numpy as jnp
    >>> clip_per_tensor_normalize(jnp.array([[3.0, 0.0], [0.0, 0.0]])).round(3).tolist()
    [[2.0, 0.0], [0.0, 0.0]]
  """
  clipped = jnp.clip(x, -1.0, 1.0)
  return clipped * jax.lax.rsqrt(jnp.mean(jnp.square(clipped)) + CLIP_PER_TENSOR_EPS)


def normalize_features(x: jax.Array, feature_normalization: str = "per_channel") -> jax.Array:
  """``x`` (``[*shape, C]``) normalised the ``feature_normalization`` way (module docstring)."""
  check_choice("feature_normalization", feature_normalization, FEATURE_NORMALIZATIONS)
  if feature_normalization == "clip_per_tensor":
    return clip_per_tensor_normalize(x)
  return second_moment_normalize(x)


def entry_features(params: PyTree, grads: PyTree, momenta: PyTree,
                   feature_normalization: str = "per_channel") -> PyTree:
  """The normalised channels that differ between entries: ``[*shape, 8]`` per tensor.

  The first ``NUM_ENTRY_FEATURES`` channels of :func:`build_features`; the
  rest, :func:`time_embedding`, is one vector for all entries.
  """
  def per_tensor(w, g, moments):
    raw = jnp.concatenate([jnp.stack([w, g], axis=-1).astype(jnp.float32),
                           moments.astype(jnp.float32)], axis=-1)
    return normalize_features(raw, feature_normalization)

  return jax.tree.map(per_tensor, params, grads, momenta)


def build_features(params: PyTree, grads: PyTree, momenta: PyTree,
                   step: jax.Array, feature_normalization: str = "per_channel") -> PyTree:
  """The 19-channel features of every entry: ``[*shape, 19]`` per tensor.

  :func:`entry_features` followed by the step's :func:`time_embedding`,
  repeated for every entry. The optimizer never builds this tensor: it hands
  the two parts to `unf_lopt.UpdateNet` separately, which folds the time
  channels into the first layer's bias.
  """
  clock = time_embedding(step)
  return jax.tree.map(
      lambda x: jnp.concatenate([x, jnp.broadcast_to(clock, (*x.shape[:-1], clock.size))], -1),
      entry_features(params, grads, momenta, feature_normalization))
