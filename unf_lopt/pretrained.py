"""Trained optimizers shipped inside the package.

  >>> available_pretrained()  # doctest: +SKIP
  ['unf_mlp_fmnist', ...]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unf_lopt.checkpoint import CONFIG_FILE, load_checkpoint
from unf_lopt.optimizer import NominalLOpt

SHIPPED = Path(__file__).parent / "pretrained_optimizers"


def available_pretrained() -> list[str]:
  """Names accepted by :func:`pretrained`."""
  if not SHIPPED.is_dir():
    return []
  return sorted(p.name for p in SHIPPED.iterdir() if (p / CONFIG_FILE).is_file())


def pretrained(name: str) -> tuple[NominalLOpt, Any]:
  """Loads the shipped optimizer ``name``: ``(lopt, meta_params)``."""
  names = available_pretrained()
  if name not in names:
    listing = ", ".join(names) if names else "none are shipped in this version yet"
    raise KeyError(f"no pretrained optimizer named {name!r}; available: {listing}")
  return load_checkpoint(SHIPPED / name)
