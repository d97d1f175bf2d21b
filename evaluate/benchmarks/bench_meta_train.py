"""Benchmark: PES meta-training throughput per update network, and device scaling.

For each update network, on one task at the paper's PES settings (16 runs,
truncation 50), from one run: compile time, outer steps/s, inner steps/s
(both antithetic particles of every run count), and the speed with the runs
sharded over N devices as a ratio to 1 device. Each device count runs in its
own process (on CPU, ``--xla_force_host_platform_device_count`` makes N
virtual devices that share the machine's cores).

Usage:
  python -m unf_lopt.evaluate.benchmarks.bench_meta_train [--task mlp_fmnist]
      [--update-nets unf,nfn,deepset,sgdm] [--devices 1,8] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import jax


def _worker(args) -> None:
  from unf_lopt.meta_train.trainer import MetaTrainConfig, MetaTrainer  # pylint: disable=g-import-not-at-top
  for update_net in args.update_nets.split(","):
    config = MetaTrainConfig(task=args.task, update_net=update_net, num_runs=args.num_runs,
                             trunc_length=args.trunc_length, horizon=args.horizon,
                             num_devices=args.worker_devices)
    trainer = MetaTrainer(config, None, quiet=True)
    state = trainer.initial_state()
    start = time.perf_counter()
    state, _ = trainer.step(state, 0)
    jax.block_until_ready(state)
    compile_seconds = time.perf_counter() - start
    best = float("inf")
    for repeat in range(3):
      start = time.perf_counter()
      for step in range(args.steps):
        state, _ = trainer.step(state, 1 + repeat * args.steps + step)
      jax.block_until_ready(state)
      best = min(best, (time.perf_counter() - start) / args.steps)
    print(json.dumps({"update_net": update_net, "devices": len(jax.devices()),
                      "compile_s": compile_seconds, "outer_per_s": 1 / best,
                      "inner_per_s": 2 * args.num_runs * args.trunc_length / best}), flush=True)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--task", default="mlp_fmnist")
  parser.add_argument("--update-nets", default="unf,nfn,deepset,sgdm")
  parser.add_argument("--devices", default="1,8")
  parser.add_argument("--num-runs", type=int, default=16)
  parser.add_argument("--trunc-length", type=int, default=50)
  parser.add_argument("--horizon", type=int, default=2000)
  parser.add_argument("--steps", type=int, default=5, help="timed outer steps per repeat")
  parser.add_argument("--worker-devices", type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker_devices:
    _worker(args)
    return
  results = []
  for count in [int(n) for n in args.devices.split(",")]:
    env = dict(os.environ)
    if jax.default_backend() == "cpu" or os.environ.get("JAX_PLATFORMS") == "cpu":
      env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                          f" --xla_force_host_platform_device_count={count}").strip()
    command = [sys.executable, "-m", "unf_lopt.evaluate.benchmarks.bench_meta_train",
               "--worker-devices", str(count),
               "--task", args.task, "--update-nets", args.update_nets,
               "--num-runs", str(args.num_runs), "--trunc-length", str(args.trunc_length),
               "--horizon", str(args.horizon), "--steps", str(args.steps)]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if output.returncode:
      sys.exit(f"worker with {count} devices failed:\n{output.stderr[-3000:]}")
    results += [json.loads(line) for line in output.stdout.splitlines() if line.startswith("{")]
  print(f"jax {jax.__version__}, backend {jax.default_backend()}; task {args.task}, "
        f"{args.num_runs} runs x truncation {args.trunc_length}")
  print(f"{'update net':10s} {'devices':>7s} {'compile s':>9s} {'outer/s':>8s} {'inner/s':>9s} "
        f"{'vs 1 device':>11s}")
  single = {r["update_net"]: r["outer_per_s"] for r in results if r["devices"] == 1}
  for r in results:
    ratio = (r["outer_per_s"] / single[r["update_net"]] if r["update_net"] in single
             else float("nan"))
    print(f"{r['update_net']:10s} {r['devices']:7d} {r['compile_s']:9.1f} {r['outer_per_s']:8.2f} "
          f"{r['inner_per_s']:9.0f} {ratio:10.2f}x")


if __name__ == "__main__":
  main()
