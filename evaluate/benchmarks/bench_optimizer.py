"""Benchmark: one optimizer step of every optimizer kind on the paper tasks' networks.

Prints, from one run, the time of a jitted ``update`` (features, update
network, nominal term) for ``unf``, ``nfn``, ``deepset``, ``sgdm`` and ``adam``
on the MLP, CNN, RNN and Transformer parameter shapes of the paper tasks, as a
ratio to Adam, with XLA's FLOP count of the step per parameter. The networks
are the tasks' own (`weight_spaces`), initialised by the tasks.

Two more columns measure the update network against the hardware:

* ``roofline``: the naive per-entry matmul chain the update network is made of
  (``19 -> 32 -> 32 -> 32 -> 1`` with ReLU, one matrix of all n entries, as
  one jitted call), and ``unf frac``, its time over the whole ``unf`` step
  (goal: at least 1.0, i.e. the step, features and head included, faster
  than the naive chain alone);
* ``fused x``: how much faster the ``unf`` update network runs on the
  entry features plus the shared time channels (the optimizer's path:
  `unf_lopt.UpdateNet` with ``shared``) than on the 19-channel features.

And two for compile time: ``unf comp`` and ``ds comp``, the seconds to lower
and compile the jitted ``unf`` and ``deepset`` steps over Adam's (goal for
``unf``: at most 3x). Each kind's step is a new function, so nothing comes
from jax's in-memory cache; the persistent compilation cache is not used
unless it is configured.

Usage:
  python -m unf_lopt.evaluate.benchmarks.bench_optimizer [--repeats 50] \\
      [--specs mlp,cnn,rnn,transformer]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

import unf_lopt as U
from unf_lopt import features as features_lib
from unf_lopt.evaluate.benchmarks.timing import best_time
from unf_lopt.evaluate.benchmarks.weight_spaces import PAPER_TASKS, count_entries, task_for
from unf_lopt.optimizer import KINDS
from unf_lopt.spec import SpecError


def step_cost(kind: str, params, spec, repeats: int) -> tuple[float, float, float] | None:
  """(seconds per step, FLOPs per parameter, compile seconds), or None where the kind
  does not apply."""
  lopt = U.NominalLOpt(kind, spec=spec, params_like=params)
  try:
    meta = lopt.init(jax.random.PRNGKey(0))
  except SpecError:
    return None  # NFN on a weight space it does not support
  opt = lopt.opt_fn(meta)
  state = opt.init(params, num_steps=1000)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)
  update = jax.jit(opt.update)
  start = time.perf_counter()
  compiled = update.lower(state, grads).compile()
  compile_seconds = time.perf_counter() - start
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, list) else analysis
  size = count_entries(params)
  seconds = best_time(lambda: compiled(state, grads), repeats)
  return seconds, float(analysis.get("flops", 0.0)) / size, compile_seconds


def roofline_time(size: int, repeats: int) -> float:
  """Seconds of the naive ``19 -> 32 -> 32 -> 32 -> 1`` ReLU chain over ``size`` rows."""
  widths = (features_lib.NUM_FEATURES, 32, 32, 32, 1)
  keys = jax.random.split(jax.random.PRNGKey(0), len(widths))
  kernels = [jax.random.normal(k, (a, b)) / a ** 0.5
             for k, a, b in zip(keys, widths[:-1], widths[1:])]
  rows = jax.random.normal(keys[-1], (size, widths[0]))

  @jax.jit
  def chain(x):
    for kernel in kernels[:-1]:
      x = jax.nn.relu(x @ kernel)
    return x @ kernels[-1]

  return best_time(lambda: chain(rows), repeats)


def fused_speedup(params, spec, repeats: int) -> float:
  """Time of the ``unf`` update net on 19-channel features over its time on the split ones."""
  lopt = U.NominalLOpt("unf", spec=spec, params_like=params)
  variables = lopt.init(jax.random.PRNGKey(0))["update_net"]
  net = lopt.network()
  grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)
  momenta = features_lib.update_momenta(features_lib.init_momenta(params), grads)
  step = jnp.asarray(10)

  @jax.jit
  def plain(params, grads, momenta):
    return net.apply(variables, features_lib.build_features(params, grads, momenta, step), spec)

  @jax.jit
  def fused(params, grads, momenta):
    return net.apply(variables, features_lib.entry_features(params, grads, momenta), spec,
                     features_lib.time_embedding(step))

  return (best_time(lambda: plain(params, grads, momenta), repeats)
          / best_time(lambda: fused(params, grads, momenta), repeats))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=50, help="calls per timing round")
  parser.add_argument("--specs", default=",".join(PAPER_TASKS),
                      help="comma-separated weight spaces: mlp, cnn, rnn, transformer (the "
                      "paper's tasks) or any registered task")
  args = parser.parse_args(argv)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; step time / Adam step time "
        "(FLOPs per parameter)")
  print(f"{'task':12s} {'params':>9s} {'adam step':>10s} " + " ".join(f"{k:>15s}" for k in KINDS)
        + f" {'unf/deepset':>12s} {'roofline':>10s} {'unf frac':>9s} {'fused x':>8s}"
        + f" {'unf comp':>9s} {'ds comp':>8s}")
  for name in args.specs.split(","):
    task = task_for(name)
    params = jax.jit(task.init)(jax.random.PRNGKey(0))
    spec = task.spec(params)
    costs = {kind: step_cost(kind, params, spec, args.repeats) for kind in KINDS}
    adam = costs["adam"][0]
    cells = [f"{'n/a':>15s}" if costs[k] is None else
             f"{costs[k][0] / adam:7.1f}x ({costs[k][1]:4.0f})" for k in KINDS]
    size = count_entries(params)
    roofline = roofline_time(size, args.repeats)
    print(f"{name:12s} {size:9d} {1e6 * adam:8.0f}us " + " ".join(cells)
          + f" {costs['unf'][0] / costs['deepset'][0]:11.2f}x {1e6 * roofline:8.0f}us"
          + f" {roofline / costs['unf'][0]:9.2f} {fused_speedup(params, spec, args.repeats):7.2f}x"
          + f" {costs['unf'][2] / costs['adam'][2]:8.1f}x"
          + f" {costs['deepset'][2] / costs['adam'][2]:7.1f}x",
          flush=True)


if __name__ == "__main__":
  main()
