"""The quick-start demo: meta-train a small UNF optimizer on FashionMNIST, compare, plot.

Meta-trains ``unf`` and the meta-tuned ``sgdm`` baseline on ``mlp_fmnist``
with a short PES schedule (8 runs, truncation 20, horizon 400, 150 outer
steps each: a few minutes on a 2-core CPU), evaluates both against Adam over
3 seeds for 400 steps, and writes ``demo/eval/training_curves.png``. Falls
back to ``tiny_mlp`` (shipped data) when FashionMNIST is not available.

Usage:
  python -m unf_lopt.evaluate.examples.demo [--out demo] [--outer-steps 150]
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from unf_lopt.evaluate.commands import evaluate as evaluate_command
from unf_lopt.evaluate.commands import plot as plot_command
from unf_lopt.meta_train import cli as meta_cli
from unf_lopt.tasks import data


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("demo"))
  parser.add_argument("--outer-steps", type=int, default=150)
  args = parser.parse_args(argv)
  task = "mlp_fmnist"
  if not (data.is_prepared("fashion_mnist") or data.DEBIAN_FASHION_MNIST_DIR.exists()):
    print("FashionMNIST is not available (apt-get install dataset-fashion-mnist); "
          "running the demo on tiny_mlp instead", file=sys.stderr)
    task = "tiny_mlp"
  runs = []
  for net in ("unf", "sgdm"):
    run = args.out / "runs" / net
    print(f"meta-training {net} on {task} -> {run}", file=sys.stderr)
    code = meta_cli.main(["--task", task, "--update-net", net, "--outer-steps",
                          str(args.outer_steps), "--num-runs", "8", "--trunc-length", "20",
                          "--horizon", "400", "--meta-learning-rate", "0.003",
                          "--checkpoint-every", "50", "--out", str(run)])
    if code:
      return code
    runs.append(str(run))
  code = evaluate_command.main(["--task", task, "--optimizers", ",".join(runs + ["adam"]),
                                "--steps", "400", "--seeds", "3", "--eval-every", "100",
                                "--out", str(args.out / "eval")])
  if code:
    return code
  return plot_command.main([str(args.out / "eval")])


if __name__ == "__main__":
  sys.exit(main())
