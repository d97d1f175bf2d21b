"""Reproduces the paper's learned-optimizer comparison on ``mlp_fmnist``, scaled to a 2-core CPU.

Meta-trains ``sgdm``, ``unf``, ``deepset`` and ``nfn`` with PES, evaluates them
with Adam over 5 seeds for the meta-training horizon, plots the curves, and
checks the optimizers' generalisation to a wider MLP on 16x16 FashionMNIST.

Scaling against the paper (the UNF paper, Zhou et al. 2024, Appendix B.2):
2,000 outer steps instead of 50,000 (4%); everything else as in the paper:
16 runs, truncation 50, horizon 2,000, sigma 0.01, global-norm clipping 1.0. The meta learning rate,
unstated in the paper, is 3e-3 here (the short schedule needs a larger step
than the 1e-3 default).

Usage (resumable; finished steps are skipped):
  python -m unf_lopt.evaluate.experiments.reproduce [--out runs/repro] [--eval eval/repro] \\
      [--outer-steps 2000]
  # --ship also copies the optimizers into unf_lopt/pretrained_optimizers:
  python -m unf_lopt.evaluate.experiments.reproduce --ship
"""

from __future__ import annotations

import argparse
import pathlib
import shutil

from unf_lopt.evaluate.commands import evaluate as evaluate_command
from unf_lopt.evaluate.commands import plot as plot_command
from unf_lopt.meta_train import cli as meta_cli
from unf_lopt.pretrained import SHIPPED
from unf_lopt.update_nets import META_TRAINABLE
GENERALISATION_TASK = {"image_size": 16, "hidden_sizes": [128]}


def meta_train_commands(out: pathlib.Path, outer_steps: int) -> list[list[str]]:
  return [["--task", "mlp_fmnist", "--update-net", net, "--outer-steps", str(outer_steps),
           "--num-runs", "16", "--trunc-length", "50", "--horizon", "2000", "--sigma", "0.01",
           "--meta-learning-rate", "0.003", "--checkpoint-every", "250", "--log-every", "25",
           "--out", str(out / net)] for net in META_TRAINABLE]


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/repro"))
  parser.add_argument("--eval", type=pathlib.Path, default=pathlib.Path("eval/repro"))
  parser.add_argument("--outer-steps", type=int, default=2000)
  parser.add_argument("--seeds", type=int, default=5)
  parser.add_argument("--ship", action="store_true",
                      help="copy the trained optimizers into the package as NET_mlp_fmnist")
  args = parser.parse_args(argv)
  for flags in meta_train_commands(args.out, args.outer_steps):
    print("unf-meta-train", " ".join(flags))
    if meta_cli.main(flags) != 0:
      raise SystemExit("meta-training failed")
  runs = [str(args.out / net) for net in META_TRAINABLE]
  evaluate_command.main(["--task", "mlp_fmnist", "--optimizers", ",".join(runs + ["adam"]),
                         "--steps", "2000", "--seeds", str(args.seeds), "--out",
                         str(args.eval / "mlp_fmnist")])
  plot_command.main([str(args.eval / "mlp_fmnist")])
  plot_command.main(["--meta", *runs, "--out", str(args.eval / "meta_training")])
  if args.ship:
    for net in META_TRAINABLE:
      target = SHIPPED / f"{net}_mlp_fmnist"
      shutil.rmtree(target, ignore_errors=True)
      shutil.copytree(args.out / net / "optimizer", target)
      print(f"shipped {target}")
  import json  # pylint: disable=g-import-not-at-top
  options = json.dumps(GENERALISATION_TASK)
  evaluate_command.main(["--task", "mlp_fmnist", "--task-options", options, "--optimizers",
                         ",".join(runs + ["adam"]), "--steps", "2000", "--seeds", str(args.seeds),
                         "--out", str(args.eval / "mlp_fmnist16_wide")])
  plot_command.main(["--compare", str(args.eval / "mlp_fmnist"),
                     str(args.eval / "mlp_fmnist16_wide"), "--out", str(args.eval / "comparison")])


if __name__ == "__main__":
  main()
