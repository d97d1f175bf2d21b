"""Predicting a network's property from its weights: StatNN, DeepSet and UNF predictors.

All three map a weight-space pytree (one network, no batch axis) to one
logit. The DeepSet and UNF predictors are invariant to the permutations of
the spec (tested); StatNN is invariant by construction of its statistics.

* ``StatNN`` (Unterthiner et al. 2020): per tensor mean, variance and the
  0/25/50/75/100 percentiles, concatenated, then an MLP.
* ``InvariantPredictor(layer="deepset"|"unf"|"nfn")``: equivariant layers
  with ReLU (``channels`` wide) -> `unf_lopt.invariant_pool` -> MLP.
* ``FlatMLP``: all weights flattened -> MLP (not invariant; the baseline).

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
import optax

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


def _binary_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets))


def fit_predictor(net: nn.Module, weights: Any, targets: np.ndarray, split: np.ndarray,
                  seed: int = 0, epochs: int = 10, batch_size: int = 10,
                  learning_rate: float = 1e-3) -> dict[str, Any]:
  """Trains ``net`` with binary cross-entropy on ``targets`` in [0, 1] (PAPER_FACTS section 7).

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
  targets = jnp.asarray(targets, jnp.float32)
  rows = {name: np.flatnonzero(split == code) for code, name in enumerate(("train", "valid", "test"))}
  take = lambda index: jax.tree.map(lambda w: jnp.asarray(w[index]), weights)
  key = jax.random.PRNGKey(seed)
  variables = net.init(key, jax.tree.map(lambda w: jnp.asarray(w[0]), weights))
  optimizer = optax.adam(learning_rate)
  state = optimizer.init(variables)
  predict = jax.jit(jax.vmap(lambda v, w: net.apply(v, w), in_axes=(None, 0)))

  @jax.jit
  def step(variables, state, batch, batch_targets):
    loss, grads = jax.value_and_grad(
        lambda v: _binary_cross_entropy(jax.vmap(lambda w: net.apply(v, w))(batch), batch_targets)
    )(variables)
    updates, state = optimizer.update(grads, state)
    return optax.apply_updates(variables, updates), state, loss

  def evaluate(variables, index):
    logits = np.concatenate([np.asarray(predict(variables, take(index[i:i + 256])))
                             for i in range(0, len(index), 256)])
    loss = float(_binary_cross_entropy(jnp.asarray(logits), targets[index]))
    return loss, kendall_tau(logits, np.asarray(targets[index]))

  rng = np.random.default_rng(seed)
  best = (float("inf"), variables, -1)
  history = []
  for epoch in range(epochs):
    order = rng.permutation(rows["train"])
    for start in range(0, len(order) - batch_size + 1, batch_size):
      index = order[start:start + batch_size]
      variables, state, _ = step(variables, state, take(index), targets[index])
    valid_loss, valid_tau = evaluate(variables, rows["valid"])
    history.append({"epoch": epoch + 1, "valid_loss": valid_loss, "valid_tau": valid_tau})
    if valid_loss < best[0]:
      best = (valid_loss, variables, epoch + 1)
  _, test_tau = evaluate(best[1], rows["test"])
  return {"test_tau": test_tau, "valid_tau": history[best[2] - 1]["valid_tau"],
          "best_epoch": best[2], "history": history}
