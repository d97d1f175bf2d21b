"""Atomic, durable writes: stage beside the target, fsync, rename into place.

A reader sees either the previous file (or directory) or the complete new
one, never a partial write; once a writer returns, the new content survives a
power loss. Each writer stages its output under a hidden name in the target's
directory (``os.replace`` is atomic only within one filesystem), fsyncs what it
wrote, renames it over the target and fsyncs the directory so that the rename
itself is on disk. If the block raises (a ``KeyboardInterrupt`` included), the
staging file or directory is removed and the target is left as it was; a
killed process can leave a hidden ``.{name}.*`` sibling behind.

Example:
  >>> import pathlib, tempfile
  >>> path = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
  >>> write_atomic(path, "first\\n")
  >>> with atomic_open(path, "w") as handle:
  ...   _ = handle.write("second\\n")
  >>> path.read_text()
  'second\\n'
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

PathLike = str | os.PathLike


def _fsync_directory(directory: Path) -> None:
  """Makes the entries of ``directory`` (creations, renames) durable."""
  if os.name != "posix":  # Windows cannot open a directory for fsync
    return
  descriptor = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(descriptor)
  finally:
    os.close(descriptor)


def _fsync_file(path: Path) -> None:
  with open(path, "rb") as handle:
    os.fsync(handle.fileno())


def _staging_name(path: Path, kind: str) -> Path:
  return path.with_name(f".{path.name}.{secrets.token_hex(4)}.{kind}")


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
  """Yields a file opened on a staging file that replaces ``path`` when the block succeeds.

  Args:
    path: the file to write; its directory is created if missing.
    mode: ``"wb"`` or ``"w"`` (text).
    **open_kwargs: passed to :func:`open` (``encoding``, ``newline``, ...).

  Raises:
    ValueError: if ``mode`` is not a write mode.
  """
  if mode not in ("w", "wb"):
    raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  while True:
    staging = _staging_name(path, "tmp")
    try:  # "x" creates the file with the usual permissions (0o666 less the umask)
      handle = open(staging, mode.replace("w", "x"), **open_kwargs)
      break
    except FileExistsError:
      continue
  try:
    with handle:
      yield handle
      handle.flush()
      os.fsync(handle.fileno())
    os.replace(staging, path)
  except BaseException:
    staging.unlink(missing_ok=True)
    raise
  _fsync_directory(path.parent)


def write_atomic(path: PathLike, data: bytes | str) -> None:
  """Writes ``data`` (text is UTF-8 encoded) to ``path`` atomically and durably."""
  if isinstance(data, str):
    data = data.encode("utf-8")
  with atomic_open(path, "wb") as handle:
    handle.write(data)


@contextlib.contextmanager
def atomic_directory(path: PathLike) -> Iterator[Path]:
  """Yields a staging directory that replaces the directory ``path`` when the block succeeds.

  Every file and directory inside the staging directory is fsynced before the
  rename, and the parent directory after it. An existing ``path`` is first
  renamed aside (``.{name}.*.old``) and deleted once the new one is in
  place. If the block raises, the staging directory is removed and ``path``
  is left as it was. Staging directories are named ``.{name}.*`` beside
  ``path``.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  while True:
    staging = _staging_name(path, "staging")
    try:  # an ordinary directory: 0o777 less the umask, unlike mkdtemp's 0o700
      staging.mkdir()
      break
    except FileExistsError:
      continue
  retired = None
  try:
    yield staging
    # Deepest first, so each directory is synced after the entries made in it.
    for entry in sorted(staging.rglob("*"), key=lambda p: len(p.parts), reverse=True):
      if entry.is_symlink():
        continue
      if entry.is_file():
        _fsync_file(entry)
      elif entry.is_dir():
        _fsync_directory(entry)
    _fsync_directory(staging)
    if path.exists():
      retired = _staging_name(path, "old")
      os.replace(path, retired)
    os.replace(staging, path)
  except BaseException:
    if retired is not None and not path.exists():
      os.replace(retired, path)  # interrupted between the two renames: put the old one back
    shutil.rmtree(staging, ignore_errors=True)
    raise
  _fsync_directory(path.parent)
  if retired is not None:
    shutil.rmtree(retired, ignore_errors=True)
