"""Benchmark: PES meta-training throughput per task and update network, and device scaling.

For each task and update network, by default at the paper's PES settings (16
runs, truncation 50), from one run: compile time, outer steps/s, inner steps/s
(both antithetic particles of every run count), and the speed with the runs
sharded over N devices as a ratio to 1 device. Each device count runs in its
own process (on CPU, ``--xla_force_host_platform_device_count`` makes N
virtual devices that share the machine's cores). ``--processes P`` splits each
device count over P processes on this machine, joined by ``jax.distributed``
(`meta_train.distributed`), as a multi-host run is.

On CPU, virtual devices and processes share the same cores, so the ``vs 1
device`` column measures the overhead of sharding and of cross-process
collectives, not a speed-up; accelerators give the speed-up.

A task with a ``conv_impl`` option (the CNN tasks, see `tasks.models.CNN`) is
timed with each of ``--conv-impls`` (default ``lax,patches``: ``nn.Conv``, the
implementation before ``conv_impl`` existed, and `tasks.conv.PatchConv`). Their
timing rounds alternate, so the ``vs first`` column (outer steps/s over the
first implementation's, same device count) compares them under the same load.

An outer step is what `meta_train.trainer.MetaTrainer.step` does: a PES
estimate over all runs and the clipped-Adam update of the meta-parameters.

Memory: ``peak MiB`` is XLA's memory plan of one PES estimate on one device
(arguments, outputs and temporaries; `meta_train.pes.TruncatedPES.estimate_memory`),
and ``x10 horizon`` the same plan with a ten times longer horizon over it:
1.00 means memory does not grow with the horizon.

Usage:
  python -m unf_lopt.evaluate.benchmarks.bench_meta_train [--task mlp_fmnist,cnn_fmnist_standin]
      [--update-nets unf,nfn,deepset,sgdm] [--devices 1,2,4,8|1,all] [--processes 1,2] [--steps 5]
      [--task-options '{"transformer_lm1b": {"tokenizer": "bytes"}}'] [--conv-impls lax,patches]

``--task all`` is the paper's four tasks, with ``cnn_fmnist_standin`` for the
CIFAR-10 CNN where CIFAR-10 is not prepared.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import jax

from unf_lopt.meta_train import distributed
from unf_lopt.meta_train.config import MetaTrainConfig
from unf_lopt.meta_train.trainer import MetaTrainer
from unf_lopt.tasks import data, registry

# The paper's four tasks (the CNN one on the FashionMNIST stand-in without CIFAR-10).
ALL_TASKS = ("mlp_fmnist", "cnn_cifar10", "rnn_lm1b", "transformer_lm1b")
DEFAULT_CONV_IMPLS = "lax,patches"


def _task_names(text: str) -> list[str]:
  names = list(ALL_TASKS) if text == "all" else text.split(",")
  return ["cnn_fmnist_standin" if name == "cnn_cifar10" and not data.is_prepared("cifar10")
          else name for name in names]


def _variants(task_name: str, conv_impls: str) -> list[str | None]:
  """The ``conv_impl`` values to time on ``task_name``; ``[None]`` where it has no such option."""
  if "conv_impl" not in registry.task_options(task_name):
    return [None]
  return conv_impls.split(",")


class _OuterStepper:
  """A `MetaTrainer` (no run directory) and its state, stepped a given number of outer steps."""

  def __init__(self, task_name: str, options: dict, update_net: str, args,
               horizon: int | None = None):
    config = MetaTrainConfig(task=task_name, task_options=options, update_net=update_net,
                             num_runs=args.num_runs, trunc_length=args.trunc_length,
                             horizon=horizon or args.horizon,
                             # A multi-process run shards over every process's devices.
                             num_devices=args.worker_devices if jax.process_count() == 1 else 0)
    self.trainer = MetaTrainer(config, None, quiet=True)
    self.state = None
    self.step_count = 0

  def init_state(self) -> None:
    self.state = self.trainer.initial_state()

  def peak_memory(self) -> int:
    """Bytes of XLA's memory plan of one PES estimate from the current state."""
    return self.trainer.pes.estimate_memory(self.state.meta_params, self.state.pes_state,
                                            jax.random.PRNGKey(0))["peak"]

  def steps(self, count: int) -> None:
    for _ in range(count):
      self.state, _ = self.trainer.step(self.state, self.step_count)
      self.step_count += 1
    jax.block_until_ready(self.state)


def _worker(args) -> None:
  all_options = json.loads(args.task_options)
  for task_name in _task_names(args.task):
    options = dict(all_options.get(task_name, {}))
    for update_net in args.update_nets.split(","):
      variants = _variants(task_name, args.conv_impls)
      steppers, compile_seconds = [], []
      for conv_impl in variants:
        variant_options = options if conv_impl is None else {**options, "conv_impl": conv_impl}
        stepper = _OuterStepper(task_name, variant_options, update_net, args)
        start = time.perf_counter()  # compile: state initialisation and the first outer step
        stepper.init_state()
        stepper.steps(1)
        steppers.append(stepper)
        compile_seconds.append(time.perf_counter() - start)
      best = [float("inf")] * len(variants)
      for _ in range(args.repeats):  # rounds alternate between the variants
        for index, stepper in enumerate(steppers):
          start = time.perf_counter()
          stepper.steps(args.steps)
          best[index] = min(best[index], (time.perf_counter() - start) / args.steps)
      memory = [None] * len(variants)
      if args.memory and jax.process_count() == 1 and len(jax.devices()) == 1:
        for index, (conv_impl, stepper) in enumerate(zip(variants, steppers)):
          variant_options = options if conv_impl is None else {**options, "conv_impl": conv_impl}
          longer = _OuterStepper(task_name, variant_options, update_net, args,
                                 horizon=10 * args.horizon)
          longer.init_state()
          memory[index] = (stepper.peak_memory(), longer.peak_memory())
      if not distributed.is_primary():
        continue
      for conv_impl, seconds, step_seconds, peaks in zip(variants, compile_seconds, best, memory):
        print(json.dumps({"task": task_name, "update_net": update_net, "conv_impl": conv_impl,
                          "devices": len(jax.devices()), "processes": jax.process_count(),
                          "compile_s": seconds,
                          "outer_per_s": 1 / step_seconds,
                          "inner_per_s": 2 * args.num_runs * args.trunc_length / step_seconds,
                          "peak_bytes": None if peaks is None else peaks[0],
                          "peak_bytes_x10_horizon": None if peaks is None else peaks[1]}),
              flush=True)


def _format(results: list[dict], args) -> str:
  lines = [f"jax {jax.__version__}, backend {jax.default_backend()}; "
           f"{args.num_runs} runs x truncation {args.trunc_length}",
           f"{'task':20s} {'update net':10s} {'conv':7s} {'devices':>7s} {'procs':>5s} "
           f"{'compile s':>9s} "
           f"{'outer/s':>8s} {'inner/s':>9s} {'vs 1 device':>11s} {'vs first':>8s} "
           f"{'peak MiB':>8s} {'x10 horizon':>11s}"]
  key = lambda r: (r["task"], r["update_net"], r["conv_impl"])
  single = {key(r): r["outer_per_s"] for r in results if r["devices"] == 1}
  first = {}  # the first conv_impl's speed per (task, update net, devices, processes)
  for r in results:
    group = (r["task"], r["update_net"], r["devices"], r["processes"])
    first.setdefault(group, r["outer_per_s"])
    vs_single = r["outer_per_s"] / single.get(key(r), float("nan"))
    vs_first = "-" if r["conv_impl"] is None else f"{r['outer_per_s'] / first[group]:7.2f}x"
    peak, longer = r.get("peak_bytes"), r.get("peak_bytes_x10_horizon")
    memory = ("       -           -" if peak is None else
              f"{peak / 2 ** 20:8.1f} {longer / peak:10.2f}x")
    lines.append(f"{r['task']:20s} {r['update_net']:10s} {r['conv_impl'] or '-':7s} "
                 f"{r['devices']:7d} {r['processes']:5d} {r['compile_s']:9.1f} "
                 f"{r['outer_per_s']:8.2f} "
                 f"{r['inner_per_s']:9.0f} {vs_single:10.2f}x {vs_first:>8s} {memory}")
  return "\n".join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--task", "--tasks", dest="task", default="mlp_fmnist",
                      help="comma-separated task names, or 'all' (the paper's four)")
  parser.add_argument("--task-options", default="{}",
                      help="JSON object: task name -> its options, e.g. "
                           "'{\"transformer_lm1b\": {\"tokenizer\": \"bytes\"}}'")
  parser.add_argument("--conv-impls", default=DEFAULT_CONV_IMPLS,
                      help="conv_impl values timed on tasks that have the option (the first is "
                           "the 'vs first' baseline)")
  parser.add_argument("--update-nets", default="unf,nfn,deepset,sgdm")
  parser.add_argument("--devices", default="1,8",
                      help="comma-separated device counts; 'all' is every device of this machine")
  parser.add_argument("--processes", default="1",
                      help="comma-separated process counts to split each device count over")
  parser.add_argument("--num-runs", type=int, default=16)
  parser.add_argument("--trunc-length", type=int, default=50)
  parser.add_argument("--horizon", type=int, default=2000)
  parser.add_argument("--steps", type=int, default=5, help="timed outer steps per round")
  parser.add_argument("--repeats", type=int, default=3, help="timing rounds (the best counts)")
  parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                      help="report XLA's peak memory plan of a PES estimate, and at 10x the "
                           "horizon (one device, one process only)")
  parser.add_argument("--worker-devices", type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument("--coordinator-address", help=argparse.SUPPRESS)
  parser.add_argument("--num-processes", type=int, help=argparse.SUPPRESS)
  parser.add_argument("--process-id", type=int, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  options = json.loads(args.task_options)
  if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
    parser.error("--task-options must be a JSON object of task name -> options object")
  if args.worker_devices:
    if args.num_processes:
      distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    _worker(args)
    return
  on_cpu = os.environ.get("JAX_PLATFORMS", "").startswith("cpu") or jax.default_backend() == "cpu"
  results = []
  for processes in [int(n) for n in args.processes.split(",")]:
    for count in [len(jax.devices()) if n == "all" else int(n) for n in args.devices.split(",")]:
      if count % processes:
        continue  # each process holds the same number of devices
      results += _run_workers(args, count, processes, on_cpu)
  print(_format(results, args))


def _run_workers(args, count: int, processes: int, on_cpu: bool) -> list[dict]:
  """Times ``count`` devices split over ``processes`` worker processes; process 0's results."""
  env = dict(os.environ)
  if on_cpu:
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count="
                        f"{count // processes}").strip()
  command = [sys.executable, "-m", "unf_lopt.evaluate.benchmarks.bench_meta_train",
             "--worker-devices", str(count // processes if processes > 1 else count),
             "--task", args.task, "--task-options", args.task_options,
             "--conv-impls", args.conv_impls, "--update-nets", args.update_nets,
             "--num-runs", str(args.num_runs), "--trunc-length", str(args.trunc_length),
             "--horizon", str(args.horizon), "--steps", str(args.steps),
             "--repeats", str(args.repeats), "--memory" if args.memory else "--no-memory"]
  if processes > 1:
    with socket.socket() as sock:  # a free port for the coordinator
      sock.bind(("127.0.0.1", 0))
      port = sock.getsockname()[1]
    workers = [subprocess.Popen(
        [*command, "--coordinator-address", f"127.0.0.1:{port}", "--num-processes",
         str(processes), "--process-id", str(index)], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for index in range(processes)]
  else:
    workers = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)]
  outputs = [worker.communicate() for worker in workers]
  for worker, (_, stderr) in zip(workers, outputs):
    if worker.returncode:
      sys.exit(f"worker with {count} devices over {processes} processes failed:\n"
               f"{stderr[-3000:]}")
  return [json.loads(line) for line in outputs[0][0].splitlines() if line.startswith("{")]


if __name__ == "__main__":
  main()
