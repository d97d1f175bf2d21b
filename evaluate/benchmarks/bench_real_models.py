"""Benchmark: the UNF optimizer's cost on real-model-like weight spaces, against Adam.

For a CNN with a flatten before its dense head (824k parameters), a CIFAR ResNet
with BatchNorm (47 tensors) and a GPT-style Transformer with learned position
embeddings (`real_model_specs`; specs inferred by `unf_lopt.infer_spec`), it prints, from one run:

* parameters and tensors of the model;
* meta-parameters of ``NominalLOpt("unf")`` with every fixed axis folded into
  channels (``max_folded_size=None``, the legacy net), with the default bound
  (``max_folded_size=16``: larger fixed axes shared, with positional channels),
  with the bound and ``tensor_pairs="linked"``, and with every fixed axis
  shared (``max_folded_size=1``, filter taps too) and linked pairs; and of ``nfn`` (which folds
  only filter taps and takes no bound: ``n/a`` where the NP layer does not
  apply, as on fixed neuron axes);
* for each timed variant (``--time``), the jitted optax ``update`` step and its
  compile time as ratios to optax Adam's, measured in the same run, and the
  same for ``deepset`` (the trunk alone: the floor of any of these update nets).

Targets (issue 14): at most 100k meta-parameters, a step at most 10x Adam's,
compile at most 5x Adam's. Legacy counts are computed from the basis plan, not
built (they reach billions).

Usage:
  python -m unf_lopt.evaluate.benchmarks.bench_real_models \\
      [--models flatten_cnn,resnet,transformer] [--time bounded,linked] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import optax

import unf_lopt as U
from unf_lopt import basis, features
from unf_lopt.evaluate.benchmarks import real_model_specs
from unf_lopt.evaluate.benchmarks.timing import best_time
from unf_lopt.layers import engine
from unf_lopt.optimizer import DEFAULT_MAX_FOLDED_SIZE
from unf_lopt.spec import SpecError, tensor_infos

SCALARS = 3  # log_alpha, logit_g0, log_beta
# name: (max_folded_size, tensor_pairs)
VARIANTS = {"legacy": (None, "all"), "bounded": (DEFAULT_MAX_FOLDED_SIZE, "all"),
            "linked": (DEFAULT_MAX_FOLDED_SIZE, "linked"), "shared_taps": (1, "linked")}


def unf_meta_parameters(params, spec, max_folded_size, tensor_pairs, hidden=32, depth=3) -> int:
  """``NominalLOpt("unf")``'s meta-parameter count, from the basis plan (nothing is built).

  Example:
    >>> import jax.numpy as jnp
    >>> params = {"w": jnp.zeros((100, 4)), "b": jnp.zeros(4)}
    >>> spec = {"w": (None, "h"), "b": ("h",)}
    >>> unf_meta_parameters(params, spec, 16, "all") == unf_meta_parameters(
    ...     {"w": jnp.zeros((1000, 4)), "b": jnp.zeros(4)}, spec, 16, "all")
    True
  """
  infos, _ = tensor_infos(spec, params)
  large = any(engine.large_fixed_positions(i, max_folded_size) for i in infos)
  inputs = features.NUM_FEATURES + (engine.POSITIONAL_CHANNELS if large else 0)
  trunk = inputs * hidden + hidden + (depth - 1) * (hidden * hidden + hidden)
  infos = engine.share_large_fixed_axes(infos, max_folded_size)
  folded = [engine.fixed_size(i) for i in infos]
  plan = basis.compile_plan(tuple(tuple(i.axes[p] for p in i.permuted_positions) for i in infos))
  head = 0
  for tensor_plan in plan.tensors:
    out = tensor_plan.out_index
    rows = hidden if tensor_pairs == "linked" else 0
    for in_index, _ in tensor_plan.terms:
      shares = set(plan.permuted_axes[out]) & set(plan.permuted_axes[in_index])
      if tensor_pairs == "all" or in_index == out or shares:
        rows += folded[in_index] * hidden
    head += (rows + 1) * folded[out]  # kernel and bias, one output channel per folded index
  return trunk + head + SCALARS


def nfn_meta_parameters(params, spec) -> int | None:
  """``NominalLOpt("nfn")``'s count, or None where the NP layer does not apply."""
  lopt = U.NominalLOpt("nfn", spec=spec, params_like=params)
  try:
    meta = jax.eval_shape(lopt.init, jax.random.PRNGKey(0))
  except SpecError:
    return None
  return sum(math.prod(x.shape) for x in jax.tree.leaves(meta))


def update_cost(tx, params, grads, repeats: int) -> tuple[float, float]:
  """(compile seconds, seconds per step) of ``jax.jit(tx.update)``."""
  state = tx.init(params)
  update = jax.jit(lambda g, s, p: tx.update(g, s, p))
  start = time.perf_counter()
  compiled = update.lower(grads, state, params).compile()
  compile_seconds = time.perf_counter() - start
  return compile_seconds, best_time(lambda: compiled(grads, state, params), repeats)


def load(name: str):
  """``(params, spec)`` of a model of `real_model_specs`, its spec inferred from the model."""
  apply_fn, params, example_args = real_model_specs.MODELS[name]()
  return params, U.infer_spec(params, apply_fn, example_args)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default=",".join(real_model_specs.MODELS),
                      help="comma-separated models of real_model_specs")
  parser.add_argument("--time", default="bounded",
                      help="comma-separated variants to time: " + ", ".join(list(VARIANTS)[1:]))
  parser.add_argument("--repeats", type=int, default=5, help="calls per timing round")
  args = parser.parse_args(argv)
  timed = [v for v in args.time.split(",") if v]
  for variant in timed:
    if variant not in VARIANTS or variant == "legacy":
      parser.error(f"--time: unknown or untimeable variant {variant!r}")
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; meta-parameters of unf "
        f"(legacy / bounded at {DEFAULT_MAX_FOLDED_SIZE} / bounded+linked / every fixed axis "
        "shared +linked) and nfn; step and compile of jitted optax update as ratios to Adam's")
  header = (f"{'model':12s} {'params':>9s} {'tensors':>7s} {'unf legacy':>14s} "
            f"{'unf bounded':>11s} {'unf linked':>10s} {'taps shared':>11s} {'nfn':>9s} "
            f"{'adam step':>9s} {'adam comp':>9s} "
            + " ".join(f"{v + ' step':>13s} {v + ' comp':>13s}" for v in [*timed, "deepset"]))
  print(header)
  for name in args.models.split(","):
    params, spec = load(name)
    counts = {v: unf_meta_parameters(params, spec, *VARIANTS[v]) for v in VARIANTS}
    nfn = nfn_meta_parameters(params, spec)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)
    adam_compile, adam_step = update_cost(optax.adam(1e-3), params, grads, args.repeats)
    cells = []
    for variant in [*timed, "deepset"]:
      if variant == "deepset":
        lopt = U.NominalLOpt("deepset")
      else:
        bound, pairs = VARIANTS[variant]
        lopt = U.NominalLOpt("unf", spec=spec, params_like=params, max_folded_size=bound,
                             tensor_pairs=pairs)
      meta = lopt.init(jax.random.PRNGKey(0))
      compile_seconds, step = update_cost(U.as_optax(lopt, meta, spec=spec), params, grads,
                                          args.repeats)
      cells.append(f"{step / adam_step:12.1f}x {compile_seconds / adam_compile:12.1f}x")
    size = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
    print(f"{name:12s} {size:9d} {len(jax.tree.leaves(params)):7d} {counts['legacy']:14d} "
          f"{counts['bounded']:11d} {counts['linked']:10d} {counts['shared_taps']:11d} "
          f"{'n/a' if nfn is None else nfn:>9} {1e3 * adam_step:7.2f}ms {adam_compile:8.2f}s "
          + " ".join(cells), flush=True)


if __name__ == "__main__":
  main()
