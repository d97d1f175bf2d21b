"""Training-curve figures from ``unf-evaluate`` outputs and meta-training runs.

The ``unf-plot`` command (`unf_lopt.evaluate.commands.plot`) draws them.
Each panel shows, per optimizer, the mean training loss over seeds with a
shaded standard-error band, on a log scale, smoothed by a trailing moving
average (``smooth``, steps); seeds whose loss went non-finite are left out and
counted in the legend. `plot_evaluations` puts one panel per
evaluation directory (one per task); `plot_meta_training` plots meta-loss
against outer step.
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from unf_lopt.evaluate.evaluation import moving_average


def read_curves(eval_dir: pathlib.Path) -> dict[str, np.ndarray]:
  """``{optimizer: train_loss [seeds, steps]}`` from ``curves.csv``.

  Raises:
    FileNotFoundError: ``eval_dir`` has no ``curves.csv``.
    ValueError: the file is not an ``unf-evaluate`` curves file (message names it).
  """
  path = eval_dir / "curves.csv"
  if not path.exists():
    raise FileNotFoundError(f"{eval_dir} has no curves.csv; is it an unf-evaluate output?")
  values = defaultdict(lambda: defaultdict(dict))
  with open(path, newline="") as handle:
    for line, row in enumerate(csv.DictReader(handle), start=2):
      try:
        values[row["optimizer"]][int(row["seed"])][int(row["step"])] = float(row["train_loss"])
      except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}, line {line}: not an unf-evaluate curves row "
                         f"({type(error).__name__}: {error})") from None
  if not values:
    raise ValueError(f"{path} has no rows")
  curves = {}
  for name, seeds in values.items():
    steps = sorted(next(iter(seeds.values())))
    try:
      curves[name] = np.asarray([[seeds[s][t] for t in steps] for s in sorted(seeds)])
    except KeyError:
      raise ValueError(f"{path}: the seeds of {name} have different steps") from None
  return curves


def read_meta_losses(run_dir: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
  """Outer steps and meta-losses of a meta-training run's ``metrics.jsonl``.

  Raises:
    FileNotFoundError: ``run_dir`` has no ``metrics.jsonl``.
    ValueError: a line is not a metrics record (message names the file and line).
  """
  path = run_dir / "metrics.jsonl"
  if not path.exists():
    raise FileNotFoundError(f"{run_dir} has no metrics.jsonl; is it an unf-meta-train run?")
  steps, losses = [], []
  for number, line in enumerate(path.read_text().splitlines(), start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      steps.append(int(record["step"]))
      losses.append(float(record["meta_loss"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
      raise ValueError(f"{path}, line {number}: not a metrics record "
                       f"({type(error).__name__}: {error})") from None
  if not steps:
    raise ValueError(f"{path} has no records yet")
  return np.asarray(steps), np.asarray(losses)


def _pyplot():
  from unf_lopt import extras  # pylint: disable=g-import-not-at-top
  matplotlib = extras.require("matplotlib", "plot")
  matplotlib.use("Agg")
  return extras.require("matplotlib.pyplot", "plot")


def _band(axis, x, runs: np.ndarray, label: str, smooth: int, color: str | None = None) -> None:
  # Seeds that diverged (a non-finite loss) are left out, as in the summary tables.
  finite = np.isfinite(runs).all(axis=1)
  if finite.any() and not finite.all():
    runs = runs[finite]
    label = f"{label} ({int((~finite).sum())} diverged)"
  smoothed = moving_average(runs, smooth) if smooth > 1 else runs
  mean = smoothed.mean(axis=0)
  error = smoothed.std(axis=0, ddof=1) / np.sqrt(len(runs)) if len(runs) > 1 else 0 * mean
  line, = axis.plot(x, mean, label=label, linewidth=1.5, color=color)
  axis.fill_between(x, np.maximum(mean - error, 1e-12), mean + error, color=line.get_color(),
                    alpha=0.25, linewidth=0)


def label_colors(panels: Sequence[tuple[str, dict[str, np.ndarray]]]) -> dict[str, str]:
  """One matplotlib color per curve label, the same in every panel (in order of first use).

  Example:
    >>> label_colors([("a", {"sgdm": None, "unf": None}), ("b", {"unf": None, "adam": None})])
    {'sgdm': 'C0', 'unf': 'C1', 'adam': 'C2'}
  """
  colors: dict[str, str] = {}
  for _, curves in panels:
    for label in curves:
      colors.setdefault(label, f"C{len(colors) % 10}")
  return colors


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


def plot_curve_panels(panels: Sequence[tuple[str, dict[str, np.ndarray]]], out: pathlib.Path,
                      smooth: int = 20, columns: int | None = None) -> list[pathlib.Path]:
  """Training-loss curves (mean ± standard error over seeds), one panel per ``(title, curves)``.

  ``curves`` maps an optimizer's label to its ``[seeds, steps]`` losses (`read_curves`); a
  label has the same color in every panel (`label_colors`). Panels fill ``columns`` per row
  (default: all in one row). Returns the PNG and PDF paths.
  """
  plt = _pyplot()
  columns = columns or len(panels)
  rows = math.ceil(len(panels) / columns)
  figure, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4 * rows), squeeze=False)
  for axis in axes.flat[len(panels):]:
    axis.set_visible(False)
  colors = label_colors(panels)
  for axis, (title, curves) in zip(axes.flat, panels):
    for name, runs in curves.items():
      _band(axis, np.arange(1, runs.shape[1] + 1), runs, name, smooth, colors[name])
    axis.set_yscale("log")
    axis.set_xlabel(f"inner training step (loss averaged over the last {smooth} steps)")
    axis.set_ylabel("training loss")
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
  paths = _save(figure, out)
  plt.close(figure)
  return paths


def plot_evaluations(eval_dirs: Sequence[pathlib.Path], out: pathlib.Path,
                     smooth: int = 20) -> list[pathlib.Path]:
  """One panel per evaluation directory; returns the written PNG and PDF paths."""
  _pyplot()  # a missing plot extra is named before any file is read
  panels = [(_title(eval_dir), read_curves(eval_dir)) for eval_dir in eval_dirs]
  return plot_curve_panels(panels, out, smooth)


def plot_meta_training(run_dirs: Sequence[pathlib.Path], out: pathlib.Path,
                       smooth: int = 1) -> list[pathlib.Path]:
  """Meta-loss against outer step for meta-training run directories."""
  plt = _pyplot()
  figure, axis = plt.subplots(figsize=(6, 4))
  for run_dir in run_dirs:
    steps, losses = read_meta_losses(run_dir)
    _band(axis, steps, losses[None], run_dir.name, smooth)
  axis.set_xlabel("outer step")
  axis.set_ylabel("meta-loss (truncation mean)")
  axis.set_title("PES meta-training")
  axis.grid(True, alpha=0.3)
  axis.legend()
  paths = _save(figure, out)
  plt.close(figure)
  return paths
