"""Benchmark: our PES meta-training against learned_optimization's, side by side.

The same meta-training (task, update network, initial meta-parameters, outer
Adam, 16 runs x truncation 50 by default) built twice, by `MetaTrainer`
(``meta_train.pes``) and by `meta_train.lo_backend.LOMetaTrainer`
(learned_optimization's ``TruncatedPES`` + ``SingleMachineGradientLearner``),
once with one jitted unroll per truncation and perturbation sign and once with
learned_optimization's default of 10 inner steps per jitted call. Reported
from one process: compile time (state init plus the first outer step), outer
and inner steps/s (inner steps count both antithetic particles of every run;
best of ``--repeats`` rounds of ``--steps`` outer steps, the rounds of the
contenders interleaved) and the speed of ours as a multiple of each.

Needs learned_optimization (``make lo-install``)::

  .venv-lo/bin/python -m unf_lopt.evaluate.benchmarks.bench_vs_learned_optimization
      [--task mlp_fmnist] [--update-nets unf,sgdm] [--num-runs 16] [--trunc-length 50] [--steps 5]
"""

from __future__ import annotations

import argparse
import functools
import time

import jax

from unf_lopt.meta_train.lo_backend import LOMetaTrainer
from unf_lopt.meta_train.trainer import MetaTrainConfig, MetaTrainer


def _compile(trainer):
  """``(state after one outer step, seconds for state init plus that step)``."""
  start = time.perf_counter()
  state, _ = trainer.step(trainer.initial_state(), 0)
  jax.block_until_ready(state)
  return state, time.perf_counter() - start


def _seconds_per_step(trainer, state, first_step: int, steps: int):
  """``(state, mean seconds per outer step)`` over ``steps`` outer steps."""
  start = time.perf_counter()
  for step in range(first_step, first_step + steps):
    state, _ = trainer.step(state, step)
  jax.block_until_ready(state)
  return state, (time.perf_counter() - start) / steps


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--task", default="mlp_fmnist")
  parser.add_argument("--update-nets", default="unf,sgdm")
  parser.add_argument("--num-runs", type=int, default=16)
  parser.add_argument("--trunc-length", type=int, default=50)
  parser.add_argument("--horizon", type=int, default=2000)
  parser.add_argument("--steps", type=int, default=5, help="timed outer steps per repeat")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args(argv)
  lo_default_steps = 10 if args.trunc_length % 10 == 0 else args.trunc_length
  inner_per_outer = 2 * args.num_runs * args.trunc_length
  print(f"jax {jax.__version__}, backend {jax.default_backend()}; task {args.task}, "
        f"{args.num_runs} runs x truncation {args.trunc_length}")
  print(f"{'update net':10s} {'meta-training':36s} {'compile s':>9s} {'outer/s':>8s} "
        f"{'inner/s':>9s} {'ours faster':>11s}")
  for update_net in args.update_nets.split(","):
    config = MetaTrainConfig(task=args.task, update_net=update_net, num_runs=args.num_runs,
                             trunc_length=args.trunc_length, horizon=args.horizon,
                             num_devices=1)
    contenders = [
        ("unf-lopt PES", functools.partial(MetaTrainer, config, None, quiet=True)),
        (f"learned_optimization, {args.trunc_length} steps/jit",
         functools.partial(LOMetaTrainer, config, None, quiet=True)),
        (f"learned_optimization, {lo_default_steps} steps/jit",
         functools.partial(LOMetaTrainer, config, None, quiet=True,
                           steps_per_jit=lo_default_steps)),
    ]
    trainers, states, compile_seconds = [], [], []
    for _, build in contenders:
      trainer = build()
      state, seconds = _compile(trainer)
      trainers.append(trainer)
      states.append(state)
      compile_seconds.append(seconds)
    # Rounds alternate between the contenders, so that load from elsewhere on the
    # machine hits all of them alike; each keeps its best round.
    best = [float("inf")] * len(contenders)
    for round_index in range(args.repeats):
      for index, trainer in enumerate(trainers):
        states[index], seconds = _seconds_per_step(trainer, states[index],
                                                   1 + round_index * args.steps, args.steps)
        best[index] = min(best[index], seconds)
    for (name, _), seconds, compiled in zip(contenders, best, compile_seconds):
      print(f"{update_net:10s} {name:36s} {compiled:9.1f} {1 / seconds:8.2f} "
            f"{inner_per_outer / seconds:9.0f} {seconds / best[0]:10.2f}x", flush=True)


if __name__ == "__main__":
  main()
