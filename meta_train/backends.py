"""The trainer of a config's backend: `make_trainer`."""

from __future__ import annotations

import os

from unf_lopt.meta_train.config import MetaTrainConfig
from unf_lopt.meta_train.outer_loop import OuterTrainer
from unf_lopt.meta_train.trainer import MetaTrainer


def make_trainer(config: MetaTrainConfig, run_dir: os.PathLike | str | None = None,
                 quiet: bool = False) -> OuterTrainer:
  """`MetaTrainer` or, for ``backend="learned_optimization"``, `lo_backend.LOMetaTrainer`.

  Raises:
    ImportError: ``backend="learned_optimization"`` where it is not installed
      (the message gives the install command).
  """
  if config.backend == "learned_optimization":
    # Imported here: learned_optimization is an optional extra.
    from unf_lopt.meta_train import lo_backend  # pylint: disable=g-import-not-at-top
    return lo_backend.LOMetaTrainer(config, run_dir, quiet=quiet)
  return MetaTrainer(config, run_dir, quiet=quiet)
