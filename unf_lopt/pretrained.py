"""Trained optimizers shipped inside the package.

Each is a checkpoint (`unf_lopt.load_checkpoint`) plus ``info.json``, which says
what it was meta-trained on:

  >>> "unf_mlp_fmnist" in available_pretrained()
  True
  >>> info = pretrained_info("unf_mlp_fmnist")
  >>> info["task"], info["task_options"], info["spec"], info["num_steps"]
  ('mlp_fmnist', {}, 'true', 2000)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unf_lopt.checkpoint import load_checkpoint
from unf_lopt.optimizer import NominalLOpt
from unf_lopt.shipped import SHIPPED, shipped_names
INFO_FILE = "info.json"
# Keys every info.json holds; `get_task(info["task"], **info["task_options"])` rebuilds the
# task the optimizer was meta-trained on, and ``num_steps`` is its meta-training horizon.
INFO_KEYS = ("task", "task_options", "spec", "num_steps")


def available_pretrained() -> list[str]:
  """Names accepted by :func:`pretrained`."""
  return shipped_names(SHIPPED)


def _checked_name(name: str) -> Path:
  names = available_pretrained()
  if name not in names:
    listing = ", ".join(names) if names else "none are shipped in this version yet"
    raise KeyError(f"no pretrained optimizer named {name!r}; available: {listing}")
  return SHIPPED / name


def pretrained(name: str) -> tuple[NominalLOpt, Any]:
  """Loads the shipped optimizer ``name``: ``(lopt, meta_params)``."""
  return load_checkpoint(_checked_name(name))


def pretrained_info(name: str) -> dict[str, Any]:
  """What the shipped optimizer ``name`` was meta-trained on.

  Returns:
    A dict with at least ``task`` (registry name), ``task_options`` (so that
    ``get_task(info["task"], **info["task_options"])`` is the training task),
    ``spec`` (``"true"`` or ``"paper"``: which weight-space specification its
    update network saw) and ``num_steps`` (the inner-training horizon it was
    meta-trained for; beyond it the optimizer extrapolates). Most also hold
    ``meta_training`` (the settings of the run) and ``result`` (its evaluation).

  Raises:
    KeyError: no such optimizer. ValueError: its info.json is missing a key.
  """
  path = _checked_name(name) / INFO_FILE
  try:
    info = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as error:
    raise ValueError(f"{path}: unreadable pretrained-optimizer info ({error})") from None
  missing = [key for key in INFO_KEYS if key not in info]
  if missing:
    raise ValueError(f"{path}: missing {', '.join(missing)}")
  return info
