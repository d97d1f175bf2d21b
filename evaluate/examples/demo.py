"""The quick-start demo: meta-train a small UNF optimizer on FashionMNIST, compare, plot.

Meta-trains ``unf`` and the meta-tuned ``sgdm`` baseline on ``mlp_fmnist``
with a short PES schedule (8 runs, truncation 20, horizon 400, 150 outer
steps each: a few minutes on a 2-core CPU). So short a run barely moves the
learned term away from SGDM, so the demo also evaluates the UNF optimizer
shipped with the package (`unf_lopt.pretrained("unf_mlp_fmnist")`, meta-trained
for 2,000 outer steps on the same task), which shows what meta-training buys.
All are evaluated against Adam over 3 seeds for 400 steps, and the demo writes
``demo/eval/training_curves.png``. Falls back to ``tiny_mlp`` (shipped data)
when FashionMNIST is not available.

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


SHIPPED_UNF = "pretrained:unf_mlp_fmnist"
EXPLANATION = """
What the rows are: `unf` and `sgdm` were meta-trained just now for {outer_steps} outer steps on
{task}; `{shipped}` is the UNF optimizer shipped with the package (2,000 outer steps on
mlp_fmnist); `adam` is Adam at learning rate 1e-3, untuned. A short run leaves UNF's learned term
small, so `unf` stays close to `sgdm`; the shipped optimizer shows what longer meta-training
learns. The figure: {out}/eval/training_curves.png."""


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
  print("evaluating the two short runs, the shipped UNF optimizer and Adam", file=sys.stderr)
  code = evaluate_command.main(["--task", task, "--optimizers",
                                ",".join(runs + [SHIPPED_UNF, "adam"]),
                                "--steps", "400", "--seeds", "3", "--eval-every", "100",
                                "--out", str(args.out / "eval")])
  if code:
    return code
  shipped_label = SHIPPED_UNF.removeprefix("pretrained:")
  print(EXPLANATION.format(outer_steps=args.outer_steps, task=task, shipped=shipped_label,
                           out=args.out))
  return plot_command.main([str(args.out / "eval")])


if __name__ == "__main__":
  sys.exit(main())
