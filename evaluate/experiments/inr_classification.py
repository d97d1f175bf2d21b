"""``unf-classify-inrs``: classify images from the weights of their INRs (DWSNets' experiment).

  unf-make-inrs --out inrs/fmnist
  unf-classify-inrs --inrs inrs/fmnist/inrs.npz --classifier unf nfn deepset mlp mlp_augment

Classifiers (all end in an MLP over 10 classes):

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

import argparse
import json
import math
import pathlib
import sys
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from unf_lopt.evaluate.experiments import predictors
from unf_lopt.tasks import inr, xla_cpu
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
  started = time.perf_counter()
  rows = {name: np.flatnonzero(split == code) for code, name in enumerate(("train", "valid", "test"))}
  if min(len(r) for r in rows.values()) == 0:
    raise ValueError(f"every split needs INRs; sizes are { {k: len(v) for k, v in rows.items()} }")
  weights = jax.tree.map(jnp.asarray, weights)
  labels = jnp.asarray(labels, jnp.int32)
  example = jax.tree.map(lambda w: w[0], weights)
  net, spec = make_classifier(kind, example, classes, channels, mlp_width=mlp_width,
                              identity_share=identity_share)
  augment = kind == "mlp_augment"
  key = jax.random.PRNGKey(seed)
  variables = net.init(key, example)
  optimizer = optax.adam(learning_rate)
  state = optimizer.init(variables)

  @jax.jit
  def step(variables, state, index, key):
    batch = jax.tree.map(lambda w: w[index], weights)
    if augment:
      batch = jax.vmap(lambda k, x: random_permutation(k, spec, x))(
          jax.random.split(key, len(index)), batch)

    def loss_fn(v):
      logits = jax.vmap(lambda x: net.apply(v, x))(batch)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels[index]).mean()

    grads = jax.grad(loss_fn)(variables)
    updates, state = optimizer.update(grads, state)
    return optax.apply_updates(variables, updates), state

  @jax.jit
  def correct(variables, index):
    batch = jax.tree.map(lambda w: w[index], weights)
    logits = jax.vmap(lambda x: net.apply(variables, x))(batch)
    return jnp.sum(jnp.argmax(logits, -1) == labels[index])

  def accuracy(variables, index):
    hits = sum(int(correct(variables, index[i:i + 500])) for i in range(0, len(index), 500))
    return hits / len(index)

  rng = np.random.default_rng(seed)
  best = (-1.0, variables, 0)
  history = []
  for epoch in range(epochs):
    order = rng.permutation(rows["train"])
    for start in range(0, len(order) - batch_size + 1, batch_size):
      key, step_key = jax.random.split(key)
      variables, state = step(variables, state, jnp.asarray(order[start:start + batch_size]),
                              step_key)
    valid_accuracy = accuracy(variables, rows["valid"])
    history.append({"epoch": epoch + 1, "valid_accuracy": valid_accuracy})
    if valid_accuracy > best[0]:
      best = (valid_accuracy, variables, epoch + 1)
  return {"test_accuracy": accuracy(best[1], rows["test"]), "valid_accuracy": best[0],
          "train_accuracy": accuracy(best[1], rows["train"]),
          "best_epoch": best[2], "history": history, "seconds": time.perf_counter() - started}


def main(argv=None) -> int:
  xla_cpu.avoid_thread_pool_hang()
  parser = argparse.ArgumentParser(prog="unf-classify-inrs", description=__doc__.split("\n")[0])
  parser.add_argument("--inrs", required=True, type=pathlib.Path, help="inrs.npz of unf-make-inrs")
  parser.add_argument("--classifier", nargs="+", default=list(CLASSIFIERS), choices=CLASSIFIERS)
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--epochs", type=int, default=10)
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--learning-rate", type=float, default=1e-3)
  parser.add_argument("--channels", type=int, default=16)
  parser.add_argument("--mlp-width", type=int, default=256)
  parser.add_argument("--identity-share", type=float, default=None,
                      help="UNF: initial variance share of the identity term (e.g. 0.8; "
                           "default: all terms alike)")
  parser.add_argument("--out", type=pathlib.Path, help="writes results.json there")
  args = parser.parse_args(argv)
  try:
    dataset = inr.load_inrs(args.inrs)
  except (FileNotFoundError, ValueError) as error:
    print(f"unf-classify-inrs: {error}", file=sys.stderr)
    return 2
  split = dataset["split"]
  weights = standardize(dataset["params"], np.flatnonzero(split == 0))
  sizes = [int((split == code).sum()) for code in range(3)]
  print(f"{args.inrs}: {sizes[0]} train / {sizes[1]} valid / {sizes[2]} test INRs, "
        f"PSNR {dataset['psnr'].mean():.1f} dB", file=sys.stderr)
  results = {}
  for kind in args.classifier:
    accuracies = []
    for seed in range(args.seeds):
      result = fit_classifier(kind, weights, dataset["label"], split, seed, args.epochs,
                              args.batch_size, args.learning_rate, channels=args.channels,
                              mlp_width=args.mlp_width, identity_share=args.identity_share)
      accuracies.append(result["test_accuracy"])
      print(f"{kind} seed {seed}: test accuracy {100 * result['test_accuracy']:.2f}% "
            f"(train {100 * result['train_accuracy']:.1f}%, best epoch {result['best_epoch']}, "
            f"{result['seconds']:.0f} s)", file=sys.stderr)
    error = float(np.std(accuracies, ddof=1) / math.sqrt(len(accuracies))) if len(accuracies) > 1 \
        else float("nan")
    results[kind] = {"accuracies": accuracies, "mean": float(np.mean(accuracies)),
                     "standard_error": error}
  print("| classifier | test accuracy (%) |\n|---|---|")
  for kind, result in results.items():
    print(f"| {kind} | {100 * result['mean']:.2f} +- {100 * result['standard_error']:.2f} |")
  if args.out:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(
        {"inrs": str(args.inrs), "split_sizes": sizes, "seeds": args.seeds,
         "identity_share": args.identity_share,
         "epochs": args.epochs, "results": results}, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
