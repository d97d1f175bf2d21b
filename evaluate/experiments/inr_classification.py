"""Classifying images from the weights of their INRs (DWSNets' experiment).

The ``unf-classify-inrs`` command (`unf_lopt.evaluate.commands.classify_inrs`)
runs `classify_inrs` on a dataset of ``unf-make-inrs``. Classifiers (all end
in an MLP over 10 classes):

* ``unf``: `unf_lopt.UNFLinear` layers on the SIREN's true symmetry (hidden
  neurons permute; coordinates and output are fixed axes, folded into
  channels). On an MLP weight space this spans the DWS layer.
* ``nfn``: NFN's NP layers, which also permute the input coordinates and the
  output (NP's assumption).
* ``deepset``: one shared map per weight entry.
* ``mlp``: all weights flattened; ``mlp_augment`` trains it on a fresh random
  hidden-neuron permutation of every example at every step.

Each tensor is standardised by one mean and standard deviation taken over
the training INRs (a per-tensor affine map keeps every symmetry). Training
is cross-entropy with Adam; the epoch with the best validation accuracy is
tested. Accuracy is reported as mean +- standard error over seeds.
DWSNets (60k FashionMNIST INRs): 67.06% for DWS, 47.79% for the best
non-equivariant baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from unf_lopt.evaluate.evaluation import mean_and_standard_error
from unf_lopt.evaluate.experiments import fitting, predictors
from unf_lopt.tasks import inr
import unf_lopt as U
from unf_lopt.permutations import permute
from unf_lopt.spec import validate_spec

CLASSIFIERS = ("unf", "nfn", "deepset", "mlp", "mlp_augment")


def standardize(weights: Any, train_rows: np.ndarray) -> Any:
  """Each tensor shifted and scaled by its mean and standard deviation over the training rows."""
  def one(w):
    w = np.asarray(w, np.float32)
    reference = w[train_rows]
    return (w - reference.mean()) / (reference.std() + 1e-8)
  return jax.tree.map(one, weights)


def random_permutation(key: jax.Array, spec: Any, tree: Any) -> Any:
  """``tree`` with every named axis permuted by a uniformly random permutation (jit-able)."""
  sizes = validate_spec(spec, tree)
  keys = jax.random.split(key, len(sizes))
  return permute(tree, spec, {name: jax.random.permutation(k, size)
                              for k, (name, size) in zip(keys, sizes.items())})


def make_classifier(kind: str, example: Any, classes: int = 10, channels: int = 16,
                    depth: int = 3, mlp_width: int = 256,
                    identity_share: float | None = None) -> tuple[nn.Module, Any]:
  """The classifier ``kind`` for INRs like ``example``, and the spec its augmentation uses."""
  true_spec = inr.spec(example)
  mlp = (mlp_width,) * 2
  if kind == "unf":
    return (predictors.InvariantPredictor(true_spec, "unf", channels, depth, mlp, classes,
                                          identity_share), true_spec)
  if kind == "deepset":
    return (predictors.InvariantPredictor(true_spec, "deepset", channels, depth, mlp, classes),
            true_spec)
  if kind == "nfn":
    every_axis = U.mlp_spec(example)
    return (predictors.InvariantPredictor(every_axis, "nfn", channels, depth, mlp, classes),
            true_spec)
  if kind in ("mlp", "mlp_augment"):
    return predictors.FlatMLP((mlp_width * 2,) * 3, classes), true_spec
  raise ValueError(f"unknown classifier {kind!r}; expected one of {', '.join(CLASSIFIERS)}")


def fit_classifier(kind: str, weights: Any, labels: np.ndarray, split: np.ndarray, seed: int = 0,
                   epochs: int = 10, batch_size: int = 32, learning_rate: float = 1e-3,
                   classes: int = 10, channels: int = 16, mlp_width: int = 256,
                   identity_share: float | None = None) -> dict[str, Any]:
  """Trains classifier ``kind`` on the train rows; tests the epoch with the best valid accuracy.

  The training loop is `fitting.fit`; ``mlp_augment`` adds a random
  hidden-neuron permutation of every example at every step.

  Args:
    kind: one of `CLASSIFIERS`.
    weights: standardised INR weights, every leaf ``[N, ...]``.
    labels: ``[N]`` class labels. split: ``[N]`` 0 train, 1 valid, 2 test.
    seed, epochs, batch_size, learning_rate: Adam training settings.
    classes, channels, mlp_width: classifier sizes.
    identity_share: initial variance share of UNF's identity term (`unf_lopt.UNFLinear`).

  Returns:
    ``{"test_accuracy", "valid_accuracy", "train_accuracy", "best_epoch", "history",
    "seconds"}``, accuracies of the tested (best-validation) parameters.
  """
  example = jax.tree.map(lambda w: np.asarray(w[0]), weights)
  net, spec = make_classifier(kind, example, classes, channels, mlp_width=mlp_width,
                              identity_share=identity_share)
  augment = ((lambda key, network: random_permutation(key, spec, network))
             if kind == "mlp_augment" else None)
  result = fitting.fit(net, weights, np.asarray(labels, np.int32), split,
                       fitting.classification_objective(), seed=seed, epochs=epochs,
                       batch_size=batch_size, learning_rate=learning_rate, augment=augment)
  return {**{f"{name}_accuracy": result.metrics[name]["accuracy"] for name in fitting.SPLITS},
          "best_epoch": result.best_epoch, "history": result.history, "seconds": result.seconds}


def classify_inrs(dataset: dict[str, Any], kinds: Sequence[str], seeds: int,
                  report: Callable[[str], None] | None = None, **settings) -> dict[str, Any]:
  """Every classifier of ``kinds`` trained ``seeds`` times on a `tasks.inr.load_inrs` dataset.

  Weights are standardised on the training INRs first (`standardize`).
  ``settings`` go to `fit_classifier`; ``report`` receives one line per fit.

  Returns:
    ``{kind: {"accuracies": per seed, "mean", "standard_error"}}`` of test accuracy.
  """
  split = dataset["split"]
  weights = standardize(dataset["params"], np.flatnonzero(split == 0))
  results = {}
  for kind in kinds:
    accuracies = []
    for seed in range(seeds):
      result = fit_classifier(kind, weights, dataset["label"], split, seed, **settings)
      accuracies.append(result["test_accuracy"])
      if report is not None:
        report(f"{kind} seed {seed}: test accuracy {100 * result['test_accuracy']:.2f}% "
               f"(train {100 * result['train_accuracy']:.1f}%, best epoch "
               f"{result['best_epoch']}, {result['seconds']:.0f} s)")
    mean, error = mean_and_standard_error(np.asarray(accuracies))
    results[kind] = {"accuracies": accuracies, "mean": mean, "standard_error": error}
  return results
