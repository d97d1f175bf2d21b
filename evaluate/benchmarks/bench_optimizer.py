"""Benchmark: one optimizer step of every optimizer kind on the paper tasks' networks.

Prints, from one run, the time of a jitted ``update`` (features, update
network, nominal term) for ``unf``, ``nfn``, ``deepset``, ``sgdm`` and ``adam``
on the MLP, CNN, RNN and Transformer parameter shapes of the paper tasks, as a
ratio to Adam, with XLA's FLOP count of the step per parameter. The networks
are the tasks' own (`weight_spaces`), initialised by the tasks. Goal: the
``unf`` step no slower than 1.5x the ``deepset`` step on every task.

Usage:
  python -m unf_lopt.evaluate.benchmarks.bench_optimizer [--repeats 50] \\
      [--specs mlp,cnn,rnn,transformer]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

import unf_lopt as U
from unf_lopt.evaluate.benchmarks.timing import best_time
from unf_lopt.evaluate.benchmarks.weight_spaces import PAPER_TASKS, count_entries, task_for
from unf_lopt.optimizer import KINDS
from unf_lopt.spec import SpecError


def step_cost(kind: str, params, spec, repeats: int) -> tuple[float, float] | None:
  """(seconds per step, FLOPs per parameter) or None where the kind does not apply."""
  lopt = U.NominalLOpt(kind, spec=spec, params_like=params)
  try:
    meta = lopt.init(jax.random.PRNGKey(0))
  except SpecError:
    return None  # NFN on a weight space it does not support
  opt = lopt.opt_fn(meta)
  state = opt.init(params, num_steps=1000)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)
  update = jax.jit(opt.update)
  compiled = update.lower(state, grads).compile()
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, list) else analysis
  size = count_entries(params)
  seconds = best_time(lambda: compiled(state, grads), repeats)
  return seconds, float(analysis.get("flops", 0.0)) / size


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
        + f" {'unf/deepset':>12s}")
  for name in args.specs.split(","):
    task = task_for(name)
    params = jax.jit(task.init)(jax.random.PRNGKey(0))
    spec = task.spec(params)
    costs = {kind: step_cost(kind, params, spec, args.repeats) for kind in KINDS}
    adam = costs["adam"][0]
    cells = [f"{'n/a':>15s}" if costs[k] is None else
             f"{costs[k][0] / adam:7.1f}x ({costs[k][1]:4.0f})" for k in KINDS]
    size = count_entries(params)
    print(f"{name:12s} {size:9d} {1e6 * adam:8.0f}us " + " ".join(cells)
          + f" {costs['unf'][0] / costs['deepset'][0]:11.2f}x", flush=True)


if __name__ == "__main__":
  main()
