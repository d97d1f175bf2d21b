"""The metrics of a run: ``metrics.jsonl`` and, optionally, TensorBoard event files beside it.

One JSON object per logged outer step (``{"step": 10, "meta_loss": ...}``).
TensorBoard events are written by tensorboardX (no TensorFlow), one scalar per
key with the key as its tag, in the same directory.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp

from unf_lopt import extras
from unf_lopt.atomic import write_atomic

METRICS_FILE = "metrics.jsonl"
# Counted over the steps since the previous row; every other metric is averaged.
SUMMED_METRICS = ("resets", "blowups")


class MetricsLog:
  """Appends rows to ``directory/metrics.jsonl`` and, with ``tensorboard``, to event files.

  Args:
    directory: the run directory.
    tensorboard: also write TensorBoard event files (needs tensorboardX;
      checked here, so that a missing package is reported before any compute).
  """

  def __init__(self, directory: os.PathLike | str, tensorboard: bool = False):
    self.directory = pathlib.Path(directory)
    self.path = self.directory / METRICS_FILE
    self._tensorboardx = extras.require("tensorboardX", "tensorboard") if tensorboard else None
    self._writer = None

  def open(self, first_step: int) -> None:
    """Starts logging after outer step ``first_step`` (0, or the step a run resumes from).

    Rows written after ``first_step`` by an earlier, interrupted attempt are
    dropped, here and in TensorBoard, so no step is ever logged twice.
    """
    self._truncate(first_step)
    if self._tensorboardx is not None:
      # purge_step makes TensorBoard hide an earlier attempt's events past first_step.
      self._writer = self._tensorboardx.SummaryWriter(logdir=str(self.directory),
                                                      purge_step=first_step + 1)

  def write(self, record: dict[str, Any]) -> None:
    with open(self.path, "a") as handle:
      handle.write(json.dumps(record) + "\n")
    if self._writer is not None:
      for name, value in record.items():
        if name != "step":
          self._writer.add_scalar(name, value, global_step=record["step"])

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def _truncate(self, last_step: int) -> None:
    if not self.path.exists():
      return
    kept = []
    for line in self.path.read_text().splitlines():
      try:
        if json.loads(line)["step"] <= last_step:
          kept.append(line)
      except (json.JSONDecodeError, KeyError, TypeError):
        break  # a line cut short by a kill: drop it and what follows
    write_atomic(self.path, "".join(line + "\n" for line in kept))


class MetricsWindow:
  """Sums the metrics of the outer steps since the last row, on the device (no sync per step).

  Args:
    first_step: the outer step the window starts after.
    inner_steps_per_outer_step: for the throughput column.
  """

  def __init__(self, first_step: int, inner_steps_per_outer_step: int):
    self.inner_steps_per_outer_step = inner_steps_per_outer_step
    self._reset(first_step)

  def _reset(self, step: int) -> None:
    self._start, self._time, self._totals = step, time.perf_counter(), None

  def add(self, metrics: dict[str, jax.Array]) -> None:
    self._totals = metrics if self._totals is None else jax.tree.map(jnp.add, self._totals,
                                                                     metrics)

  def row(self, step: int) -> dict[str, float | int]:
    """The row for the steps up to ``step``: means, `SUMMED_METRICS` totals, inner steps/s."""
    count = step - self._start
    record: dict[str, float | int] = {"step": step}
    for name, value in (self._totals or {}).items():
      record[name] = float(value) if name in SUMMED_METRICS else float(value) / count
    seconds = time.perf_counter() - self._time
    record["inner_steps_per_s"] = self.inner_steps_per_outer_step * count / seconds
    self._reset(step)
    return record
