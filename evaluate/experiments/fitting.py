"""The one training loop of the weight-space models: predictors and classifiers of networks.

`fit` trains a flax model that maps one network's weights to an output with
Adam on minibatches of the training networks, evaluates it on the validation
networks after every epoch, and keeps the parameters of the best epoch
(early stopping). An `Objective` says what is learned: the loss, the
metrics of a whole split and which metric picks the best epoch.
`binary_objective` (success rates, `predictors.fit_predictor`) and
`classification_objective` (class labels, `inr_classification.fit_classifier`)
are the two in use.

Example:

  >>> import jax, numpy as np
  >>> from unf_lopt.evaluate.experiments import predictors
  >>> weights = {"w": np.random.default_rng(0).normal(size=(30, 3, 2)).astype(np.float32)}
  >>> targets = (weights["w"].mean(axis=(1, 2)) > 0).astype(np.float32)
  >>> split = np.repeat([0, 1, 2], 10)
  >>> result = fit(predictors.FlatMLP((8,)), weights, targets, split, binary_objective(),
  ...              epochs=2, batch_size=5)
  >>> result.best_epoch in (1, 2), sorted(result.metrics["test"])
  (True, ['loss', 'tau'])
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

SPLITS = ("train", "valid", "test")  # the codes 0, 1, 2 of a ``split`` array
EVAL_CHUNK = 256  # networks per forward pass when a whole split is evaluated


@dataclasses.dataclass(frozen=True)
class Objective:
  """What `fit` learns.

  Attributes:
    loss: ``(outputs [batch, ...], targets [batch]) -> scalar`` training loss (jax).
    metrics: ``(outputs [n, ...], targets [n]) -> {name: float}`` of a whole
      split (numpy).
    select: the metric that picks the best epoch on the validation split.
    maximize: whether a larger ``select`` is better.
  """

  loss: Callable[[jax.Array, jax.Array], jax.Array]
  metrics: Callable[[np.ndarray, np.ndarray], dict[str, float]]
  select: str
  maximize: bool


@dataclasses.dataclass(frozen=True)
class FitResult:
  """The outcome of `fit`.

  Attributes:
    variables: the model's variables of the best validation epoch.
    best_epoch: that epoch, from 1.
    history: per epoch, ``{"epoch", "valid_<metric>": ...}``.
    metrics: ``{"train" | "valid" | "test": {metric: value}}`` of ``variables``.
    seconds: wall-clock time of the whole fit.
  """

  variables: Any
  best_epoch: int
  history: list[dict[str, float]]
  metrics: dict[str, dict[str, float]]
  seconds: float


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


def _binary_cross_entropy(logits, targets):
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets))


def binary_objective() -> Objective:
  """Binary cross-entropy on targets in [0, 1]; the best epoch has the lowest validation loss.

  Metrics: ``loss`` and ``tau`` (Kendall's tau between logits and targets).
  """
  def metrics(logits, targets):
    return {"loss": float(_binary_cross_entropy(jnp.asarray(logits), jnp.asarray(targets))),
            "tau": kendall_tau(logits, targets)}

  return Objective(_binary_cross_entropy, metrics, select="loss", maximize=False)


def classification_objective() -> Objective:
  """Softmax cross-entropy on integer labels; the best epoch has the highest validation accuracy.

  Metrics: ``accuracy``.
  """
  def loss(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  def metrics(logits, labels):
    return {"accuracy": float(np.mean(np.argmax(logits, -1) == labels))}

  return Objective(loss, metrics, select="accuracy", maximize=True)


def split_rows(split: np.ndarray) -> dict[str, np.ndarray]:
  """``{"train" | "valid" | "test": row indices}`` of a split array of codes 0, 1, 2."""
  split = np.asarray(split)
  return {name: np.flatnonzero(split == code) for code, name in enumerate(SPLITS)}


def fit(net: nn.Module, weights: Any, targets: np.ndarray, split: np.ndarray,
        objective: Objective, *, seed: int = 0, epochs: int = 10, batch_size: int = 10,
        learning_rate: float = 1e-3,
        augment: Callable[[jax.Array, Any], Any] | None = None) -> FitResult:
  """Trains ``net`` on the training networks; keeps the best validation epoch.

  Args:
    net: maps one network's weights (a pytree, no batch axis) to its output.
    weights: the networks' parameters, every leaf stacked over networks
      ``[N, ...]``; they stay on the host and move to the device a batch at a time.
    targets: ``[N]`` what ``objective`` learns (rates or labels).
    split: ``[N]`` with 0 train, 1 valid, 2 test; every split must be non-empty.
    objective: loss, metrics and best-epoch rule.
    seed: initialises ``net`` (``PRNGKey(seed)``) and orders the batches.
    epochs, batch_size, learning_rate: Adam training settings; an epoch is
      every full batch of a fresh permutation of the training networks.
    augment: ``(key, network) -> network`` applied to every training
      example at every step (e.g. a random permutation of its neurons).

  Returns:
    A `FitResult`.

  Raises:
    ValueError: an empty split, fewer training networks than ``batch_size``,
      or targets and weights of different lengths.
  """
  started = time.perf_counter()
  weights = jax.tree.map(np.asarray, weights)
  targets = np.asarray(targets)
  count = len(targets)
  if any(len(leaf) != count for leaf in jax.tree.leaves(weights)):
    raise ValueError(f"weights and targets disagree on the number of networks ({count} targets)")
  rows = split_rows(split)
  if min(len(r) for r in rows.values()) == 0:
    raise ValueError(f"every split needs networks; sizes are "
                     f"{ {name: len(r) for name, r in rows.items()} }")
  if epochs < 1 or batch_size < 1 or len(rows["train"]) < batch_size:
    raise ValueError(f"need epochs >= 1 and 1 <= batch_size <= {len(rows['train'])} training "
                     f"networks, got epochs={epochs}, batch_size={batch_size}")
  take = lambda index: jax.tree.map(lambda w: w[index], weights)
  key = jax.random.PRNGKey(seed)
  variables = net.init(key, jax.tree.map(lambda w: w[0], weights))
  optimizer = optax.adam(learning_rate)
  state = optimizer.init(variables)
  apply_batch = lambda v, batch: jax.vmap(lambda network: net.apply(v, network))(batch)

  @jax.jit
  def step(variables, state, batch, batch_targets, key):
    if augment is not None:
      batch = jax.vmap(augment)(jax.random.split(key, len(batch_targets)), batch)
    grads = jax.grad(lambda v: objective.loss(apply_batch(v, batch), batch_targets))(variables)
    updates, state = optimizer.update(grads, state)
    return optax.apply_updates(variables, updates), state

  predict = jax.jit(apply_batch)

  def evaluate(variables, index) -> dict[str, float]:
    outputs = np.concatenate([np.asarray(predict(variables, take(index[i:i + EVAL_CHUNK])))
                              for i in range(0, len(index), EVAL_CHUNK)])
    return objective.metrics(outputs, targets[index])

  def score(metrics: Mapping[str, float]) -> float:
    value = metrics[objective.select]
    if not np.isfinite(value):
      return -np.inf  # a diverged epoch is never the best
    return value if objective.maximize else -value

  rng = np.random.default_rng(seed)
  best_score, best_variables, best_epoch = -np.inf, variables, 0
  history = []
  for epoch in range(1, epochs + 1):
    order = rng.permutation(rows["train"])
    for start in range(0, len(order) - batch_size + 1, batch_size):
      index = order[start:start + batch_size]
      key, step_key = jax.random.split(key)
      variables, state = step(variables, state, take(index), targets[index], step_key)
    valid = evaluate(variables, rows["valid"])
    history.append({"epoch": epoch, **{f"valid_{name}": value for name, value in valid.items()}})
    if best_epoch == 0 or score(valid) > best_score:
      best_score, best_variables, best_epoch = score(valid), variables, epoch
  metrics = {name: evaluate(best_variables, index) for name, index in rows.items()}
  return FitResult(best_variables, best_epoch, history, metrics, time.perf_counter() - started)
