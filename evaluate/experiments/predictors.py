"""Predicting a network's property from its weights: StatNN, DeepSet and UNF predictors.

All three map a weight-space pytree (one network, no batch axis) to one
logit. The DeepSet and UNF predictors are invariant to the permutations of
the spec (tested); StatNN is invariant by construction of its statistics.

* ``StatNN`` (Unterthiner et al. 2020): per tensor mean, variance and the
  0/25/50/75/100 percentiles, concatenated, then an MLP.
* ``InvariantPredictor(layer="deepset"|"unf"|"nfn")``: equivariant layers
  with ReLU (``channels`` wide) -> `unf_lopt.invariant_pool` -> MLP.
* ``FlatMLP``: all weights flattened -> MLP (not invariant; the baseline).

Paper sizes (the UNF paper, Zhou et al. 2024, Section 4.1): StatNN MLP 6 x 600;
UNF 3 layers x 16 channels, MLP 3 x 512.

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
from unf_lopt.evaluate.experiments import fitting

PERCENTILES = (0.0, 25.0, 50.0, 75.0, 100.0)


def tensor_statistics(params: Any) -> jax.Array:
  """StatNN's features: 7 statistics per tensor, in tree order."""
  stats = []
  for leaf in jax.tree.leaves(params):
    flat = jnp.ravel(leaf)
    stats += [flat.mean(), flat.var(), *jnp.percentile(flat, jnp.asarray(PERCENTILES))]
  return jnp.stack(stats)


class _MLP(nn.Module):
  """ReLU MLP; one output is returned as a scalar (a logit), several as a vector."""

  widths: Sequence[int]
  outputs: int = 1

  @nn.compact
  def __call__(self, x):
    for width in self.widths:
      x = nn.relu(nn.Dense(width)(x))
    x = nn.Dense(self.outputs)(x)
    return x[..., 0] if self.outputs == 1 else x


class StatNN(nn.Module):
  """Statistics of each tensor, standardised -> MLP -> logit.

  ``shift`` and ``scale`` standardise each statistic (they span orders of
  magnitude); `statnn_for` takes them from the training networks.
  """

  mlp: Sequence[int] = (600,) * 6
  shift: tuple[float, ...] | None = None
  scale: tuple[float, ...] | None = None

  @nn.compact
  def __call__(self, params):
    features = tensor_statistics(params)
    if self.shift is not None:
      features = (features - jnp.asarray(self.shift)) / jnp.asarray(self.scale)
    return _MLP(tuple(self.mlp))(features)


def statnn_for(weights: Any, mlp: Sequence[int] = (600,) * 6) -> StatNN:
  """A StatNN standardising by the statistics of ``weights`` (stacked ``[N, ...]``)."""
  stats = np.asarray(jax.vmap(tensor_statistics)(weights))
  return StatNN(tuple(mlp), tuple(stats.mean(0).tolist()),
                tuple((stats.std(0) + 1e-8).tolist()))


EQUIVARIANT_LAYERS = {"unf": U.UNFLinear, "deepset": U.DeepSetLinear, "nfn": U.NFNLinear}


class InvariantPredictor(nn.Module):
  """Equivariant layers (UNF, DeepSet or NFN) -> invariant pooling -> MLP -> logit(s).

  ``outputs=1`` gives one logit (a scalar); more give a vector of class logits.
  NFN's layer is defined for MLP/CNN chains whose every axis is permuted.
  """

  spec: Any
  layer: str = "unf"
  channels: int = 16
  depth: int = 3
  mlp: Sequence[int] = (512,) * 3
  outputs: int = 1
  identity_share: float | None = None  # UNF only: see `unf_lopt.UNFLinear`

  @nn.compact
  def __call__(self, params):
    if self.layer not in EQUIVARIANT_LAYERS:
      raise ValueError(f"layer must be one of {sorted(EQUIVARIANT_LAYERS)}, got {self.layer!r}")
    features = jax.tree.map(lambda p: p[..., None], params)
    for _ in range(self.depth):
      layer = (U.UNFLinear(self.channels, identity_share=self.identity_share)
               if self.layer == "unf" else EQUIVARIANT_LAYERS[self.layer](self.channels))
      features = jax.tree.map(nn.relu, layer(features, self.spec))
    return _MLP(tuple(self.mlp), self.outputs)(U.invariant_pool(features, self.spec))


class FlatMLP(nn.Module):
  """The non-equivariant baseline: every weight, flattened in tree order -> MLP."""

  mlp: Sequence[int] = (512,) * 3
  outputs: int = 1

  @nn.compact
  def __call__(self, params):
    flat = jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(params)])
    return _MLP(tuple(self.mlp), self.outputs)(flat)


def fit_predictor(net: nn.Module, weights: Any, targets: np.ndarray, split: np.ndarray,
                  seed: int = 0, epochs: int = 10, batch_size: int = 10,
                  learning_rate: float = 1e-3) -> dict[str, Any]:
  """Trains ``net`` with binary cross-entropy on ``targets`` in [0, 1] (`fitting.fit`).

  The paper's recipe (the UNF paper, Zhou et al. 2024, Section 4.1): Adam 1e-3,
  batch 10, up to 10 epochs, early stopping on the validation split.

  Args:
    net: a predictor (one network in, one logit out).
    weights: the networks' parameters, every leaf stacked over networks ``[N, ...]``.
    targets: ``[N]`` values in [0, 1] (e.g. test success rates).
    split: ``[N]`` with 0 train, 1 valid, 2 test.
    seed, epochs, batch_size, learning_rate: Adam training settings.

  Returns:
    ``{"test_tau", "valid_tau", "best_epoch", "history"}``; the parameters of
    the epoch with the best validation loss are the ones tested (early stopping).
  """
  result = fitting.fit(net, weights, np.asarray(targets, np.float32), split,
                       fitting.binary_objective(), seed=seed, epochs=epochs,
                       batch_size=batch_size, learning_rate=learning_rate)
  return {"test_tau": result.metrics["test"]["tau"],
          "valid_tau": result.metrics["valid"]["tau"], "best_epoch": result.best_epoch,
          "history": result.history}
