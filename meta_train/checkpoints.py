"""Atomic, resumable meta-training checkpoints.

A checkpoint is a directory ``checkpoints/step_NNNNNNN`` holding

* ``optimizer/``: the learned optimizer at that step, in the format of
  `unf_lopt.save_checkpoint` (loadable on its own with `unf_lopt.load_checkpoint`);
* ``training_state.msgpack``: everything needed to continue bit for bit (meta-
  parameters, outer optimizer state, every PES run), flax msgpack, no pickle;
* ``training_state.json``: step, config fingerprint, the msgpack's sha256 and
  the layout version of the state (``STATE_LAYOUT``).

It is written with `unf_lopt.atomic.atomic_directory` (a hidden staging
directory renamed into place), so a
process killed at any moment leaves either the previous checkpoints or the new
complete one; staging leftovers are ignored and cleaned up.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import shutil
from typing import Any

import flax.serialization
import jax
import numpy as np

import unf_lopt as U
from unf_lopt.atomic import atomic_directory

STATE_FILE = "training_state.msgpack"
STATE_INFO = "training_state.json"
OPTIMIZER_DIR = "optimizer"
_STEP_DIR = re.compile(r"step_(\d+)")
# Version of the training state's layout; checkpoints without one have layout 1.
# 2: the optimizer state keeps a tensor's six feature momenta in one [*shape, 6] array
#    (layout 1: six pytrees).
STATE_LAYOUT = 2


class TrainingCheckpointError(ValueError):
  """A training checkpoint is damaged or belongs to another configuration."""


def save(directory: os.PathLike | str, step: int, state: Any, lopt, meta_params,
         fingerprint: str, metadata: dict[str, Any] | None = None, keep: int = 3) -> pathlib.Path:
  """Writes checkpoint ``step`` atomically and keeps the newest ``keep``."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  payload = flax.serialization.msgpack_serialize(
      jax.tree.map(np.asarray, flax.serialization.to_state_dict(state)))
  info = {"step": step, "fingerprint": fingerprint,
          "sha256": hashlib.sha256(payload).hexdigest(), "state_layout": STATE_LAYOUT}
  final = directory / f"step_{step:07d}"
  with atomic_directory(final) as staging:
    U.save_checkpoint(staging / OPTIMIZER_DIR, lopt, meta_params,
                      metadata={**(metadata or {}), "outer_step": step})
    (staging / STATE_FILE).write_bytes(payload)
    (staging / STATE_INFO).write_text(json.dumps(info, indent=2))
  for old in complete_steps(directory)[:-keep]:
    shutil.rmtree(directory / f"step_{old:07d}", ignore_errors=True)
  return final


def complete_steps(directory: os.PathLike | str) -> list[int]:
  """Steps of the checkpoints in ``directory`` that were fully written, ascending."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    return []
  steps = []
  for path in directory.iterdir():
    match = _STEP_DIR.fullmatch(path.name)
    if match and (path / STATE_INFO).is_file() and (path / STATE_FILE).is_file():
      steps.append(int(match.group(1)))
  return sorted(steps)


def remove_staging_leftovers(directory: os.PathLike | str) -> None:
  directory = pathlib.Path(directory)
  if directory.is_dir():
    for path in directory.glob(".step_*"):
      shutil.rmtree(path, ignore_errors=True)


def restore(directory: os.PathLike | str, target: Any, fingerprint: str) -> tuple[int, Any] | None:
  """``(step, state)`` of the newest checkpoint, or None if there is none.

  ``target`` is a state of the same structure (e.g. a freshly initialised one).

  Raises:
    TrainingCheckpointError: the newest checkpoint is corrupted or was written
      for another configuration (``fingerprint`` differs).
  """
  steps = complete_steps(directory)
  if not steps:
    return None
  path = pathlib.Path(directory) / f"step_{steps[-1]:07d}"
  try:
    info = json.loads((path / STATE_INFO).read_text())
  except (OSError, json.JSONDecodeError) as error:
    raise TrainingCheckpointError(f"{path / STATE_INFO} is unreadable ({error})") from error
  if info.get("fingerprint") != fingerprint:
    raise TrainingCheckpointError(
        f"{path} was written by a run with a different configuration; use another --out "
        "directory or the original settings")
  layout = info.get("state_layout", 1)
  if layout != STATE_LAYOUT:
    raise TrainingCheckpointError(
        f"{path} holds a training state of layout {layout}, written by "
        f"{'an earlier' if layout < STATE_LAYOUT else 'a later'} unf-lopt; this one reads layout "
        f"{STATE_LAYOUT} only, so the run cannot continue from it. Its learned optimizer, "
        f"{path / OPTIMIZER_DIR}, still loads with unf_lopt.load_checkpoint; start the run in "
        "another --out directory")
  payload = (path / STATE_FILE).read_bytes()
  if hashlib.sha256(payload).hexdigest() != info.get("sha256"):
    raise TrainingCheckpointError(f"{path / STATE_FILE} does not match its checksum in "
                                  f"{STATE_INFO}: the file is damaged")
  try:
    restored = flax.serialization.msgpack_restore(payload)
    state = flax.serialization.from_state_dict(target, restored)
  except Exception as error:  # msgpack and structure mismatches raise several types
    raise TrainingCheckpointError(f"{path / STATE_FILE} cannot be restored ({error})") from error
  # from_state_dict takes any array where the target has one: check the shapes too.
  restored_leaves = jax.tree_util.tree_leaves_with_path(state)
  for (where, got), want in zip(restored_leaves, jax.tree.leaves(target)):
    if np.shape(got) != np.shape(want):
      raise TrainingCheckpointError(
          f"{path / STATE_FILE} cannot be restored: {jax.tree_util.keystr(where)} has shape "
          f"{np.shape(got)} where this run's state has {np.shape(want)}")
  return int(info["step"]), state
