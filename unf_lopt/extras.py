"""Optional dependencies: imported on first use, with the ``pip install`` line that adds them.

The core (``import unf_lopt`` and the learned optimizers) needs only jax, flax,
optax and numpy. Data preparation, plots, progress bars and the
learned_optimization interop come with the extras of setup.cfg.

Example:

  >>> from unf_lopt import extras
  >>> extras.require("numpy", "data").__name__
  'numpy'
  >>> extras.require("no_such_module", "plot")
  Traceback (most recent call last):
  ...
  ImportError: no_such_module is not installed; ... pip install "unf-lopt[plot]"
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


def install_hint(extra: str) -> str:
  """The command that installs an extra of this distribution."""
  return f'pip install "unf-lopt[{extra}]"'


def require(module: str, extra: str) -> ModuleType:
  """Imports ``module``; where it is missing, ImportError names the extra that provides it."""
  try:
    return importlib.import_module(module)
  except ImportError as error:
    raise ImportError(f"{module} is not installed; it comes with the {extra!r} extra: "
                      f"{install_hint(extra)}") from error


class _NoProgress:
  """Stands in for a tqdm bar where tqdm is not installed: the bar's calls do nothing."""

  def update(self, n: float = 1) -> None:
    del n

  def set_postfix(self, *args: Any, **kwargs: Any) -> None:
    del args, kwargs

  def set_description(self, *args: Any, **kwargs: Any) -> None:
    del args, kwargs

  def refresh(self) -> None:
    pass

  def close(self) -> None:
    pass

  def __enter__(self) -> "_NoProgress":
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()


def progress_bar(**tqdm_options: Any) -> Any:
  """A ``tqdm.auto.tqdm`` bar, or a silent stand-in without tqdm (a bar is never essential).

  With ``iterable=...`` and no tqdm, the iterable itself is returned.
  """
  try:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  except ImportError:
    return tqdm_options.get("iterable", _NoProgress())
  return tqdm(**tqdm_options)
