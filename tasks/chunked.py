"""Resumable builds of datasets made of many independent pieces (zoos of trained networks, INRs).

A build is a list of chunks; each chunk's arrays are written atomically to
``chunk_NNNNN.npz`` (staged, then renamed) as soon as it is computed, so a
killed build resumes with the first missing chunk and gives the same result.

Example:

  >>> import tempfile, numpy as np
  >>> from tasks import chunked
  >>> squares = lambda number: {"value": np.arange(number * 2, number * 2 + 2) ** 2}
  >>> with tempfile.TemporaryDirectory() as directory:
  ...   paths = chunked.build_chunks(directory, [2, 2], squares, quiet=True)
  ...   chunked.load_chunks(paths)["value"].tolist()
  [0, 1, 4, 9]
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable, Sequence

import jax
import numpy as np

from unf_lopt.atomic import atomic_open, write_atomic


def chunk_path(directory: os.PathLike | str, number: int) -> pathlib.Path:
  return pathlib.Path(directory) / f"chunk_{number:05d}.npz"


def record_config(directory: os.PathLike | str, config: dict, what: str) -> None:
  """Writes ``config.json`` in a new build directory, or checks that an old one matches.

  A build resumed with other settings would mix chunks of two builds, so a
  mismatch raises ``ValueError`` naming the directory (``what`` says what it holds).
  """
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  stored = json.loads(json.dumps(config))  # tuples become lists, as when read back
  path = directory / "config.json"
  if path.exists():
    if json.loads(path.read_text()) != stored:
      raise ValueError(f"{directory} holds {what} of another configuration; use another --out")
  else:
    write_atomic(path, json.dumps(stored, indent=2))


def build_chunks(directory: os.PathLike | str, sizes: Sequence[int],
                 compute: Callable[[int], dict[str, np.ndarray]], description: str = "building",
                 unit: str = "item", quiet: bool = False) -> list[pathlib.Path]:
  """Computes every chunk not yet on disk, in order; returns all chunk paths.

  Args:
    directory: where the chunks live (created if missing).
    sizes: number of items in each chunk (for the progress bar).
    compute: ``compute(number)`` -> the arrays of chunk ``number``.
    description, unit: progress-bar labels.
    quiet: no progress bar.
  """
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  progress = None
  if not quiet:
    # Without tqdm (the data extra) there is no bar, and nothing else changes.
    from unf_lopt.extras import progress_bar  # pylint: disable=g-import-not-at-top
    progress = progress_bar(total=sum(sizes), desc=description, unit=unit)
  paths = []
  for number, size in enumerate(sizes):
    path = chunk_path(directory, number)
    if not path.exists():
      arrays = {name: np.asarray(value) for name, value in compute(number).items()}
      with atomic_open(path) as handle:
        np.savez(handle, **arrays)
    paths.append(path)
    if progress is not None:
      progress.update(size)
  if progress is not None:
    progress.close()
  return paths


def load_chunks(paths: Sequence[os.PathLike | str]) -> dict[str, np.ndarray]:
  """Every array of the chunks, concatenated along the first axis in chunk order."""
  parts: dict[str, list[np.ndarray]] = {}
  for path in paths:
    try:
      with np.load(path, allow_pickle=False) as chunk:
        for name in chunk.files:
          parts.setdefault(name, []).append(chunk[name])
    except (OSError, ValueError) as error:
      raise ValueError(f"{path} is damaged ({error}); delete it and run the build again to "
                       "recompute that chunk") from error
  return {name: np.concatenate(values) for name, values in parts.items()}


def flatten_tree(tree) -> dict[str, np.ndarray]:
  """A nested dict of arrays as ``{"a/b/c": array}`` (npz keys)."""
  flat = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    flat["/".join(str(getattr(k, "key", k)) for k in path)] = np.asarray(leaf)
  return flat


def unflatten_tree(flat: dict[str, np.ndarray]) -> dict:
  """The inverse of `flatten_tree`."""
  tree: dict = {}
  for key, value in flat.items():
    node = tree
    *parents, leaf = key.split("/")
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree
