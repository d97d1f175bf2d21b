"""The DeepSet layer, invariant pooling and pointwise nonlinearities over weight spaces."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from unf_lopt.layers import engine

PyTree = Any


class DeepSetLinear(nn.Module):
  """One ``c_in x c_out`` map and bias applied to every entry of every tensor.

  Equivariant to any permutation of the entries of the whole weight space
  (the "DS" layer of the UNF paper's learned optimizers: exactly
  ``c_in * c_out + c_out`` parameters). The spec is only validated.
  """

  out_channels: int
  use_bias: bool = True
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: PyTree, spec: PyTree) -> PyTree:
    leaves, _, treedef, in_channels = engine.features_and_infos(features, spec)
    kernel, bias = _declare_pointwise(self, in_channels, self.out_channels, self.use_bias,
                                      self.param_dtype)
    outputs = []
    for x in leaves:
      y = x @ kernel.astype(x.dtype)
      outputs.append(y + bias.astype(x.dtype) if bias is not None else y)
    return treedef.unflatten(outputs)


class DeepSetWeights(nn.Module):
  """The kernel and bias of a :class:`DeepSetLinear`, returned instead of applied.

  For code that applies the map itself, e.g. to many tensors at once
  (`unf_lopt.layers.pointwise_mlp`). Under the same module name it declares
  exactly the parameters, with the same initial values, that
  ``DeepSetLinear`` does.
  """

  out_channels: int
  use_bias: bool = True
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, in_channels: int) -> tuple[jax.Array, jax.Array]:
    kernel, bias = _declare_pointwise(self, in_channels, self.out_channels, self.use_bias,
                                      self.param_dtype)
    return kernel, bias if bias is not None else jnp.zeros((self.out_channels,), kernel.dtype)


def _declare_pointwise(module: nn.Module, in_channels: int, out_channels: int, use_bias: bool,
                       param_dtype: Any) -> tuple[jax.Array, jax.Array | None]:
  kernel = module.param("kernel", nn.initializers.lecun_normal(), (in_channels, out_channels),
                        param_dtype)
  bias = (module.param("bias", nn.initializers.zeros, (out_channels,), param_dtype)
          if use_bias else None)
  return kernel, bias


def invariant_pool(features: PyTree, spec: PyTree) -> jax.Array:
  """Mean of every tensor over its permuted axes, concatenated to one vector.

  Fixed axes are kept (flattened into the vector), so the result is invariant
  to the spec's permutations and loses no fixed-axis information. For a spec
  without fixed axes the result is ``[n_tensors * C]``.

  Example:
    >>> import jax.numpy as jnp
    >>> spec = {"w": ("a", "b"), "b": ("b",)}
    >>> x = {"w": jnp.ones((2, 3, 4)), "b": jnp.zeros((3, 4))}  # 4 channels
    >>> invariant_pool(x, spec).shape
    (8,)
  """
  leaves, infos, _, _ = engine.features_and_infos(features, spec)
  pooled = []
  for x, info in zip(leaves, infos):
    pooled.append(jnp.mean(x, axis=info.permuted_positions).reshape(-1))
  return jnp.concatenate(pooled)


class InvariantPool(nn.Module):
  """Module form of :func:`invariant_pool` (no parameters)."""

  @nn.compact
  def __call__(self, features: PyTree, spec: PyTree) -> jax.Array:
    return invariant_pool(features, spec)


def pointwise(fn: Callable[[jax.Array], jax.Array]) -> Callable[[PyTree], PyTree]:
  """Lifts an elementwise function (e.g. ``jax.nn.relu``) to a weight space.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> pointwise(jax.nn.relu)({"w": jnp.array([-1.0, 2.0])})["w"]
    Array([0., 2.], dtype=float32)
  """
  return lambda features: jax.tree.map(fn, features)
