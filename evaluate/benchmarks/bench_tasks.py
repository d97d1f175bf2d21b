"""Benchmark: Adam training speed of every paper task, and its input pipeline.

For each task, from one run on this machine:

* ``step/s``: jitted Adam train steps per second on a fixed batch (model only);
* ``batches/s``: numpy batches per second from the task's training iterator;
* ``data/step``: time to produce one batch / time of one step. Below 1, the
  input pipeline keeps up with the model; the goal is well below 1 everywhere.

The CIFAR-10 CNN runs on the FashionMNIST stand-in unless CIFAR-10 is
prepared; LM1B tasks use the shipped Brown Corpus unless LM1B is prepared.

Usage:
  python -m unf_lopt.evaluate.benchmarks.bench_tasks [--tasks mlp_fmnist,rnn_lm1b] [--repeats 50]
"""

from __future__ import annotations

import argparse
import time

import jax
import optax

from unf_lopt import tasks
from unf_lopt.evaluate.benchmarks.timing import best_time
from unf_lopt.evaluate.benchmarks.weight_spaces import PAPER_TASKS
from unf_lopt.tasks import data


def adam_step_seconds(task: tasks.Task, repeats: int) -> float:
  params = task.init(jax.random.PRNGKey(0))
  optimizer = optax.adam(1e-3)
  state = optimizer.init(params)
  batch = next(task.datasets.train)

  @jax.jit
  def step(params, state, batch):
    grads = jax.grad(task.loss)(params, batch)
    updates, state = optimizer.update(grads, state)
    return optax.apply_updates(params, updates), state

  return best_time(lambda: step(params, state, batch), repeats)


def batch_seconds(task: tasks.Task, repeats: int) -> float:
  iterator = task.datasets.train
  next(iterator)
  best = float("inf")
  for _ in range(5):
    start = time.perf_counter()
    for _ in range(repeats):
      next(iterator)
    best = min(best, (time.perf_counter() - start) / repeats)
  return best


def resolve(name: str) -> str:
  if name == "cnn_cifar10" and not data.is_prepared("cifar10"):
    print("cnn_cifar10: CIFAR-10 is not prepared; timing the stand-in cnn_fmnist_standin")
    return "cnn_fmnist_standin"
  return name


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--tasks", default=",".join(PAPER_TASKS.values()),
                      help="comma-separated registered tasks")
  parser.add_argument("--repeats", type=int, default=50, help="steps or batches per timing round")
  args = parser.parse_args(argv)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}")
  rows = []
  for name in args.tasks.split(","):
    task = tasks.get_task(resolve(name))
    step = adam_step_seconds(task, args.repeats)
    fetch = batch_seconds(task, args.repeats)
    rows.append((task.name, 1 / step, 1 / fetch, fetch / step))
  print(f"{'task':20s} {'step/s':>9s} {'batches/s':>10s} {'data/step':>10s}")
  for name, steps, batches, ratio in rows:
    print(f"{name:20s} {steps:9.0f} {batches:10.0f} {ratio:10.3f}")


if __name__ == "__main__":
  main()
