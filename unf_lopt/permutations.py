"""The group action: permuting a weight space by one permutation per axis name.

Example:
  >>> import numpy as np
  >>> spec = {"w": ("a", "b"), "b": ("b",)}
  >>> params = {"w": np.arange(6.0).reshape(2, 3), "b": np.arange(3.0)}
  >>> permute(params, spec, {"a": np.array([1, 0]), "b": np.array([2, 0, 1])})["b"]
  array([2., 0., 1.])
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import jax
import numpy as np

from unf_lopt.spec import FIXED, tensor_infos, validate_spec

PyTree = Any


def sample_permutations(rng: np.random.Generator, spec: PyTree, tree: PyTree, *,
                        trailing_dims: int = 0) -> dict[Hashable, np.ndarray]:
  """One uniformly random permutation per axis name of ``spec``."""
  sizes = validate_spec(spec, tree, trailing_dims=trailing_dims)
  return {name: rng.permutation(size) for name, size in sizes.items()}


def permute(tree: PyTree, spec: PyTree, permutations: Mapping[Hashable, Any], *,
            trailing_dims: int = 0) -> PyTree:
  """Applies ``permutations[name]`` to every axis called ``name``.

  Fixed axes and names missing from ``permutations`` are left as they are.
  Permutations may be numpy or jax arrays; with jax arrays (and jax leaves)
  this works under ``jit`` and ``vmap``.
  ``trailing_dims`` extra axes (e.g. channels) are never permuted.
  """
  infos, treedef = tensor_infos(spec, tree, trailing_dims=trailing_dims)
  leaves = treedef.flatten_up_to(tree)
  permuted = []
  for leaf, info in zip(leaves, infos):
    for axis, name in enumerate(info.axes):
      if name is not FIXED and name in permutations:
        index = permutations[name]
        # jax arrays (also traced ones, under jit/vmap) index as they are.
        leaf = leaf.take(index if isinstance(index, jax.Array) else np.asarray(index), axis=axis)
    permuted.append(leaf)
  return jax.tree_util.tree_unflatten(treedef, permuted)
