"""Benchmark: cost of a 32 -> 1 UNFLinear on the weight spaces of the paper's four tasks.

For each spec it prints, from one run on one machine:
  * build + compile time of ``UNFLinear`` (plan, ``init`` and ``apply`` under jit),
  * forward time of ``UNFLinear`` next to ``DeepSetLinear`` (pointwise, same width),
    for one weight space and vmapped over 16 (PES's parallel runs), and, where
    the weight space is small enough, next to a dense brute-force reference that
    sums one dense matrix per basis term,
and the ratios between them. Targets on a 2-core CPU: Transformer build+compile
under 5 s; UNF forward within 3x of DeepSet on the MLP spec.

The networks are the tasks' own (`weight_spaces`), with the tasks' specs.

Usage:
  python -m unf_lopt.evaluate.benchmarks.bench_layers [--repeats 200] \\
      [--specs mlp,cnn,rnn,transformer]
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

import unf_lopt as U
from unf_lopt.evaluate.benchmarks.timing import best_time
from unf_lopt.evaluate.benchmarks.weight_spaces import PAPER_TASKS, count_entries, weight_space
from unf_lopt import basis
from unf_lopt.spec import tensor_infos

CHANNELS_IN = 32
BATCH = 16  # parallel inner runs of PES: the update net runs vmapped over them
DENSE_REFERENCE_LIMIT = 3_000  # entries; the dense maps grow with its square
BATCH_LIMIT = 100_000  # entries; larger specs are timed unbatched only


def _term_matrix(out_shape, in_shape, term) -> np.ndarray:
  labels = (*term.out_labels, *term.in_labels)
  sizes = (*out_shape, *in_shape)
  matrix = np.ones(sizes, np.float32)
  for label in set(labels):
    where = [p for p, other in enumerate(labels) if other == label]
    for a, b in zip(where, where[1:]):
      shape = [1] * len(sizes)
      shape[a], shape[b] = sizes[a], sizes[b]
      matrix = matrix * np.eye(sizes[a], dtype=np.float32).reshape(shape)
  pooled = set(term.in_labels) - set(term.out_labels)
  matrix /= math.prod(sizes[labels.index(label)] for label in pooled)
  return matrix.reshape(math.prod(out_shape), math.prod(in_shape))


def dense_reference(params, spec, variables):
  """Builds the UNF layer as one dense matrix per term; returns (build seconds, forward fn)."""
  start = time.perf_counter()
  infos, _ = tensor_infos(spec, params)
  plan = basis.compile_plan(tuple(i.axes for i in infos))
  p = variables["params"]
  matrices = []
  for out_index, (info, tensor_plan) in enumerate(zip(infos, plan.tensors)):
    kernel = p[f"kernel[{info.path}]"]
    for row, (in_index, term) in enumerate(tensor_plan.terms):
      matrices.append((out_index, in_index,
                       jnp.asarray(_term_matrix(info.shape, infos[in_index].shape, term)),
                       kernel[row * CHANNELS_IN:(row + 1) * CHANNELS_IN]))
  build = time.perf_counter() - start

  @jax.jit
  def forward(leaves):
    outputs = [0.0] * len(infos)
    for out_index, in_index, matrix, coefficients in matrices:
      x = leaves[in_index].reshape(-1, CHANNELS_IN)
      outputs[out_index] = outputs[out_index] + matrix @ (x @ coefficients)
    return outputs
  return build, forward


def bench(name: str, repeats: int) -> dict[str, float]:
  params, spec = weight_space(name)
  features = jax.tree.map(lambda a: jnp.ones((*a.shape, CHANNELS_IN)) * 0.1, params)
  entries = count_entries(params)
  basis.compile_plan.cache_clear()
  unf = U.UNFLinear(1)
  start = time.perf_counter()
  variables = jax.jit(lambda k: unf.init(k, features, spec))(jax.random.PRNGKey(0))
  forward = jax.jit(lambda v, x: unf.apply(v, x, spec)).lower(variables, features).compile()
  build = time.perf_counter() - start
  row = {"entries": entries, "build_s": build,
         "unf_us": 1e6 * best_time(lambda: forward(variables, features), repeats)}
  deepset = U.DeepSetLinear(1)
  ds_vars = deepset.init(jax.random.PRNGKey(0), features, spec)
  ds_forward = jax.jit(lambda v, x: deepset.apply(v, x, spec))
  row["deepset_us"] = 1e6 * best_time(lambda: ds_forward(ds_vars, features), repeats)
  if entries <= BATCH_LIMIT:
    batch = jax.tree.map(lambda a: jnp.stack([a] * BATCH), features)
    unf_batched = jax.jit(jax.vmap(lambda x: unf.apply(variables, x, spec)))
    ds_batched = jax.jit(jax.vmap(lambda x: deepset.apply(ds_vars, x, spec)))
    row["unf_batched_us"] = 1e6 * best_time(lambda: unf_batched(batch), max(1, repeats // 4))
    row["deepset_batched_us"] = 1e6 * best_time(lambda: ds_batched(batch), max(1, repeats // 4))
  if entries <= DENSE_REFERENCE_LIMIT:
    dense_build, dense_forward = dense_reference(params, spec, variables)
    leaves = jax.tree.leaves(features)
    row["dense_build_s"] = dense_build
    row["dense_us"] = 1e6 * best_time(lambda: dense_forward(leaves), max(1, repeats // 10))
  return row


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=200, help="calls per timing round")
  parser.add_argument("--specs", default=",".join(PAPER_TASKS),
                      help="comma-separated weight spaces: mlp, cnn, rnn, transformer (the "
                      "paper's tasks) or any registered task")
  args = parser.parse_args(argv)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; UNFLinear({CHANNELS_IN} -> 1)")
  header = (f"{'spec':12s} {'entries':>9s} {'build+compile':>14s} {'UNF fwd':>10s} "
            f"{'DeepSet fwd':>12s} "
            f"{'UNF/DS':>7s} {'UNF/DS x' + str(BATCH):>10s} {'dense fwd':>10s} {'dense/UNF':>9s}")
  print(header)
  for name in args.specs.split(","):
    row = bench(name, args.repeats)
    batched = (f"{row['unf_batched_us'] / row['deepset_batched_us']:9.1f}x"
               if "unf_batched_us" in row else f"{'-':>10s}")
    dense = (f"{row['dense_us']:8.0f}us {row['dense_us'] / row['unf_us']:8.1f}x"
             if "dense_us" in row else f"{'-':>10s} {'-':>9s}")
    print(f"{name:12s} {row['entries']:9d} {row['build_s']:13.2f}s {row['unf_us']:8.0f}us "
          f"{row['deepset_us']:10.0f}us {row['unf_us'] / row['deepset_us']:6.1f}x {batched} "
          f"{dense}",
          flush=True)

if __name__ == "__main__":
  main()
