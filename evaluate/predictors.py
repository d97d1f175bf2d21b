"""Predicting a network's property from its weights: StatNN, DeepSet and UNF predictors.

All three map a weight-space pytree (one network, no batch axis) to one
logit. The DeepSet and UNF predictors are invariant to the permutations of
the spec (tested); StatNN is invariant by construction of its statistics.

* ``StatNN`` (Unterthiner et al. 2020): per tensor mean, variance and the
  0/25/50/75/100 percentiles, concatenated, then an MLP.
* ``InvariantPredictor(layer="deepset"|"unf")``: equivariant layers with ReLU
  (``channels`` wide) -> `unf_lopt.invariant_pool` -> MLP.

Paper sizes (PAPER_FACTS section 7): StatNN MLP 6 x 600; UNF 3 layers x 16
channels, MLP 3 x 512.

Example:

  >>> import jax, jax.numpy as jnp
  >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
  >>> spec = {"w": ("a", "b"), "b": ("b",)}
  >>> net = InvariantPredictor(spec, layer="unf", channels=4, mlp=(8,))
  >>> variables = net.init(jax.random.PRNGKey(0), params)
  >>> net.apply(variables, params).shape
  ()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import unf_lopt as U

PERCENTILES = (0.0, 25.0, 50.0, 75.0, 100.0)


def tensor_statistics(params: Any) -> jax.Array:
  """StatNN's features: 7 statistics per tensor, in tree order."""
  stats = []
  for leaf in jax.tree.leaves(params):
    flat = jnp.ravel(leaf)
    stats += [flat.mean(), flat.var(), *jnp.percentile(flat, jnp.asarray(PERCENTILES))]
  return jnp.stack(stats)


class _MLP(nn.Module):
  widths: Sequence[int]

  @nn.compact
  def __call__(self, x):
    for width in self.widths:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(1)(x)[..., 0]


class StatNN(nn.Module):
  """Statistics of each tensor -> MLP -> logit."""

  mlp: Sequence[int] = (600,) * 6

  @nn.compact
  def __call__(self, params):
    features = tensor_statistics(params)
    # Statistics span orders of magnitude; a learned normalisation keeps the MLP stable.
    features = nn.LayerNorm(use_scale=False, use_bias=False)(features)
    return _MLP(tuple(self.mlp))(features)


class InvariantPredictor(nn.Module):
  """Equivariant layers (DeepSet or UNF) -> invariant pooling -> MLP -> logit."""

  spec: Any
  layer: str = "unf"
  channels: int = 16
  depth: int = 3
  mlp: Sequence[int] = (512,) * 3

  @nn.compact
  def __call__(self, params):
    if self.layer not in ("unf", "deepset"):
      raise ValueError(f"layer must be 'unf' or 'deepset', got {self.layer!r}")
    features = jax.tree.map(lambda p: p[..., None], params)
    for _ in range(self.depth):
      layer = U.UNFLinear(self.channels) if self.layer == "unf" else U.DeepSetLinear(self.channels)
      features = jax.tree.map(nn.relu, layer(features, self.spec))
    return _MLP(tuple(self.mlp))(U.invariant_pool(features, self.spec))


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float:
  """Kendall's tau-b (ties corrected), as ``scipy.stats.kendalltau``'s default."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.shape != y.shape or x.ndim != 1:
    raise ValueError(f"need two 1-D arrays of one length, got {x.shape} and {y.shape}")
  upper = np.triu_indices(len(x), k=1)
  dx = np.sign(x[:, None] - x[None, :])[upper]
  dy = np.sign(y[:, None] - y[None, :])[upper]
  concordance = np.sum(dx * dy)
  untied = np.sqrt(np.sum(dx != 0) * np.sum(dy != 0))
  return float(concordance / untied) if untied else float("nan")
