"""``unf-plot``: training-curve figures from ``unf-evaluate`` outputs and meta-training runs.

  unf-plot eval/mlp                          # eval/mlp/training_curves.{png,pdf}
  unf-plot --compare eval/mlp eval/cnn --out figures/comparison
  unf-plot --meta runs/unf runs/sgdm --out figures/meta_training

Each panel shows, per optimizer, the mean training loss over seeds with a
shaded standard-error band, on a log scale, smoothed by a trailing moving
average (``--smooth``, steps). ``--compare`` puts one panel per evaluation
directory (one per task). ``--meta`` plots meta-loss against outer step.
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import sys
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from unf_lopt.evaluate.evaluation import moving_average


def read_curves(eval_dir: pathlib.Path) -> dict[str, np.ndarray]:
  """``{optimizer: train_loss [seeds, steps]}`` from ``curves.csv``."""
  path = eval_dir / "curves.csv"
  if not path.exists():
    raise FileNotFoundError(f"{eval_dir} has no curves.csv; is it an unf-evaluate output?")
  values = defaultdict(lambda: defaultdict(dict))
  with open(path, newline="") as handle:
    for row in csv.DictReader(handle):
      values[row["optimizer"]][int(row["seed"])][int(row["step"])] = float(row["train_loss"])
  curves = {}
  for name, seeds in values.items():
    steps = sorted(next(iter(seeds.values())))
    curves[name] = np.asarray([[seeds[s][t] for t in steps] for s in sorted(seeds)])
  return curves


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _band(axis, x, runs: np.ndarray, label: str, smooth: int) -> None:
  smoothed = moving_average(runs, smooth) if smooth > 1 else runs
  mean = smoothed.mean(axis=0)
  error = smoothed.std(axis=0, ddof=1) / np.sqrt(len(runs)) if len(runs) > 1 else 0 * mean
  line, = axis.plot(x, mean, label=label, linewidth=1.5)
  axis.fill_between(x, np.maximum(mean - error, 1e-12), mean + error, color=line.get_color(),
                    alpha=0.25, linewidth=0)


def _title(eval_dir: pathlib.Path) -> str:
  config_path = eval_dir / "config.json"
  if config_path.exists():
    config = json.loads(config_path.read_text())
    options = config.get("task_options") or {}
    suffix = ", ".join(f"{k}={v}" for k, v in options.items())
    return config["task"] + (f" ({suffix})" if suffix else "") + f", {config['seeds']} seeds"
  return eval_dir.name


def _save(figure, out: pathlib.Path) -> list[pathlib.Path]:
  out.parent.mkdir(parents=True, exist_ok=True)
  figure.tight_layout()
  paths = [out.with_suffix(".png"), out.with_suffix(".pdf")]
  for path in paths:
    figure.savefig(path, dpi=150, bbox_inches="tight")
  return paths


def plot_evaluations(eval_dirs: Sequence[pathlib.Path], out: pathlib.Path,
                     smooth: int = 20) -> list[pathlib.Path]:
  """One panel per evaluation directory; returns the written PNG and PDF paths."""
  plt = _pyplot()
  figure, axes = plt.subplots(1, len(eval_dirs), figsize=(5.5 * len(eval_dirs), 4),
                              squeeze=False)
  for axis, eval_dir in zip(axes[0], eval_dirs):
    for name, runs in read_curves(eval_dir).items():
      _band(axis, np.arange(1, runs.shape[1] + 1), runs, name, smooth)
    axis.set_yscale("log")
    axis.set_xlabel(f"inner training step (loss averaged over the last {smooth} steps)")
    axis.set_ylabel("training loss")
    axis.set_title(_title(eval_dir))
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
  paths = _save(figure, out)
  plt.close(figure)
  return paths


def plot_meta_training(run_dirs: Sequence[pathlib.Path], out: pathlib.Path,
                       smooth: int = 1) -> list[pathlib.Path]:
  """Meta-loss against outer step for meta-training run directories."""
  plt = _pyplot()
  figure, axis = plt.subplots(figsize=(6, 4))
  for run_dir in run_dirs:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
      raise FileNotFoundError(f"{run_dir} has no metrics.jsonl; is it an unf-meta-train run?")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    steps = np.asarray([r["step"] for r in records])
    losses = np.asarray([[r["meta_loss"] for r in records]])
    _band(axis, steps, losses, run_dir.name, smooth)
  axis.set_xlabel("outer step")
  axis.set_ylabel("meta-loss (truncation mean)")
  axis.set_title("PES meta-training")
  axis.grid(True, alpha=0.3)
  axis.legend()
  paths = _save(figure, out)
  plt.close(figure)
  return paths


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="unf-plot", description=__doc__.split("\n")[0])
  parser.add_argument("eval_dir", nargs="?", type=pathlib.Path, help="an unf-evaluate output")
  parser.add_argument("--compare", nargs="+", type=pathlib.Path, help="evaluation directories")
  parser.add_argument("--meta", nargs="+", type=pathlib.Path, help="meta-training run directories")
  parser.add_argument("--out", type=pathlib.Path, help="output path without suffix")
  parser.add_argument("--smooth", type=int, default=None,
                      help="moving-average window in steps (default 20; 1 for --meta)")
  args = parser.parse_args(argv)
  try:
    if args.meta:
      out = args.out or pathlib.Path("meta_training")
      paths = plot_meta_training(args.meta, out, args.smooth or 1)
    else:
      dirs = args.compare or ([args.eval_dir] if args.eval_dir else [])
      if not dirs:
        parser.error("give an evaluation directory, --compare DIRS or --meta RUNS")
      out = args.out or dirs[0] / "training_curves"
      paths = plot_evaluations(dirs, out, args.smooth or 20)
  except FileNotFoundError as error:
    print(f"unf-plot: {error}", file=sys.stderr)
    return 2
  for path in paths:
    print(path)
  return 0


if __name__ == "__main__":
  sys.exit(main())
