"""Task names -> constructors: ``get_task("mlp_fmnist")``.

Example:

  >>> from unf_lopt import tasks
  >>> task = tasks.get_task("tiny_mlp")
  >>> task.name, task.batch_size
  ('tiny_mlp', 32)
  >>> "mlp_fmnist" in tasks.registered_tasks()
  True
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable

from unf_lopt.tasks import base, image_tasks, language_tasks

_REGISTRY: dict[str, Callable[..., base.Task]] = {}


def register(name: str, factory: Callable[..., base.Task]) -> None:
  """Adds a task constructor under ``name`` (its docstring describes it)."""
  if name in _REGISTRY:
    raise ValueError(f"task {name!r} is already registered")
  _REGISTRY[name] = factory


def registered_tasks() -> dict[str, str]:
  """``{name: one-line description}`` of every registered task."""
  return {name: (factory.__doc__ or "").strip().splitlines()[0]
          for name, factory in _REGISTRY.items()}


def task_options(name: str) -> dict[str, inspect.Parameter]:
  """The options ``get_task(name, **options)`` accepts, with their defaults.

  >>> task_options("mlp_fmnist")["hidden_sizes"].default
  (32,)
  """
  if name not in _REGISTRY:
    raise KeyError(f"unknown task {name!r}; registered: {', '.join(_REGISTRY)}")
  parameters = inspect.signature(_REGISTRY[name]).parameters
  return {key: parameter for key, parameter in parameters.items() if key != "name"}


# ``lo:NAME`` names a learned_optimization task (optional extra, see README).
LO_PREFIX = "lo:"


def get_task(name: str, **options) -> base.Task:
  """The task called ``name``; ``options`` override its defaults (e.g. ``image_size=8``).

  ``lo:NAME`` is learned_optimization's task ``NAME`` (see `tasks.lo_tasks.lo_task`);
  it raises ImportError with the install command where learned_optimization is
  not installed.
  """
  if name.startswith(LO_PREFIX):
    # Imported here: everything else runs without the optional learned_optimization.
    from unf_lopt.tasks import lo_tasks  # pylint: disable=g-import-not-at-top
    return lo_tasks.lo_task(name[len(LO_PREFIX):], **options)
  if name not in _REGISTRY:
    close = difflib.get_close_matches(name, _REGISTRY, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"unknown task {name!r}.{hint} Registered: {', '.join(_REGISTRY)}")
  return _REGISTRY[name](name=name, **options)


def get_task_family(name: str, **options) -> base.TaskFamily:
  """A `TaskFamily` over seeds of the task ``name``."""
  return base.TaskFamily(get_task(name, **options))


for _name, _factory in [
    ("mlp_fmnist", image_tasks.mlp_fmnist),
    ("cnn_cifar10", image_tasks.cnn_cifar10),
    ("cnn_fmnist_standin", image_tasks.cnn_fmnist_standin),
    ("rnn_lm1b", language_tasks.rnn_lm1b),
    ("transformer_lm1b", language_tasks.transformer_lm1b),
    ("tiny_mlp", image_tasks.tiny_mlp),
    ("tiny_cnn", image_tasks.tiny_cnn),
    ("tiny_rnn", language_tasks.tiny_rnn),
    ("tiny_transformer", language_tasks.tiny_transformer),
]:
  register(_name, _factory)
