"""The names of the optimizers shipped with the package, without loading any of them.

A module of its own so that error messages elsewhere (a spec that does not
match a trained optimizer) can suggest shipped optimizers without importing
the checkpoint reader.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED = Path(__file__).parent / "pretrained_optimizers"
# `unf_lopt.checkpoint.CONFIG_FILE`: every checkpoint directory has one.
CHECKPOINT_CONFIG_FILE = "optimizer.json"


def shipped_names(directory: Path = SHIPPED) -> list[str]:
  """Names of the optimizers in ``directory`` (default: the shipped ones), sorted."""
  if not directory.is_dir():
    return []
  return sorted(p.name for p in directory.iterdir() if (p / CHECKPOINT_CONFIG_FILE).is_file())
