"""A run directory: what one meta-training run writes, and what a resumed run reads back.

* ``config.json``: the resolved `MetaTrainConfig`;
* ``metrics.jsonl`` (and TensorBoard event files with ``tensorboard``): see
  `meta_train.metrics_log`;
* ``checkpoints/step_N/``: see `meta_train.checkpoints`;
* ``optimizer/``: the trained optimizer, in `unf_lopt.save_checkpoint` format.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import unf_lopt as U
from unf_lopt.atomic import write_atomic
from unf_lopt.meta_train import checkpoints
from unf_lopt.meta_train.config import RESUMABLE_KEYS, MetaTrainConfig
from unf_lopt.meta_train.metrics_log import MetricsLog

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
OPTIMIZER_DIR = "optimizer"


class RunDirectory:
  """The outputs of one run, checked against ``config`` on construction (before any compute).

  Args:
    path: the directory (created when the run starts).
    config: the run's settings.
    resumable: whether the backend can continue from a checkpoint; if not, a
      directory that already holds a run is refused.

  Raises:
    ValueError: ``path`` is a file, holds a run with another configuration (the
      message names the differing settings), or holds a run that cannot be resumed.
    ImportError: ``config.tensorboard`` without tensorboardX.
  """

  def __init__(self, path: os.PathLike | str, config: MetaTrainConfig, resumable: bool = True):
    self.path = pathlib.Path(path)
    self.config = config
    self.resumable = resumable
    if self.path.exists() and not self.path.is_dir():
      raise ValueError(f"--out {self.path} is a file; the run directory must be a directory")
    self._check_stored_config()
    self.metrics = MetricsLog(self.path, tensorboard=config.tensorboard)

  @property
  def checkpoint_dir(self) -> pathlib.Path:
    return self.path / CHECKPOINT_DIR

  def _check_stored_config(self) -> None:
    config_path = self.path / CONFIG_FILE
    if not config_path.exists():
      return
    if not self.resumable:
      raise ValueError(f"{self.path} already holds a run, and the {self.config.backend} backend "
                       "cannot resume: choose another --out")
    try:
      stored = json.loads(config_path.read_text())
      previous = MetaTrainConfig.from_dict(stored)
    except (TypeError, ValueError) as error:  # JSONDecodeError is a ValueError
      raise ValueError(f"{config_path} is not a meta-training config ({error})") from error
    if previous.fingerprint() != self.config.fingerprint():
      differing = sorted(k for k, v in self.config.to_dict().items()
                         if k not in RESUMABLE_KEYS and stored.get(k) != v)
      raise ValueError(
          f"{self.path} holds a run with a different configuration (differs in: "
          f"{', '.join(differing)}); resume with the same settings or choose another --out")

  def write_config(self) -> None:
    self.path.mkdir(parents=True, exist_ok=True)
    write_atomic(self.path / CONFIG_FILE,
                 json.dumps(self.config.to_dict(), indent=2, sort_keys=True))

  def restore(self, like: Any, clean_up: bool = True) -> tuple[int, Any] | None:
    """``(step, training state)`` of the newest checkpoint, or None; ``like`` gives the structure.

    ``clean_up`` removes what an interrupted checkpoint write left behind (only
    the process that writes the directory may).

    Raises:
      checkpoints.TrainingCheckpointError: the newest checkpoint is damaged.
    """
    if clean_up:
      checkpoints.remove_staging_leftovers(self.checkpoint_dir)
    return checkpoints.restore(self.checkpoint_dir, like, self.config.fingerprint())

  def save_checkpoint(self, step: int, lopt: U.NominalLOpt, meta_params: Any,
                      state: Any | None = None) -> pathlib.Path:
    """Checkpoint ``step``: resumable with the training ``state``, else the optimizer alone."""
    metadata = {"task": self.config.task, "task_options": self.config.task_options,
                "backend": self.config.backend}
    if state is not None:
      return checkpoints.save(self.checkpoint_dir, step, state, lopt, meta_params,
                              self.config.fingerprint(), metadata=metadata)
    path = self.checkpoint_dir / f"step_{step:07d}" / OPTIMIZER_DIR
    U.save_checkpoint(path, lopt, meta_params, metadata={**metadata, "outer_step": step})
    return path.parent

  @property
  def optimizer_path(self) -> pathlib.Path:
    """Where the trained optimizer of a finished run is (``optimizer/``)."""
    return self.path / OPTIMIZER_DIR

  def save_optimizer(self, lopt: U.NominalLOpt, meta_params: Any) -> pathlib.Path:
    """The trained optimizer, in ``optimizer/``."""
    path = self.optimizer_path
    U.save_checkpoint(path, lopt, meta_params,
                      metadata={"task": self.config.task,
                                "task_options": self.config.task_options,
                                "backend": self.config.backend,
                                "outer_steps": self.config.outer_steps,
                                "config": self.config.to_dict()})
    return path
