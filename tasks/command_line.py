"""Argument parsing shared by the unf-lopt commands.

Every command checks its whole input before any compute. A bad input ends
the command with exit status 2 and one line on stderr, ``PROG: error:
argument --FLAG: WHAT``, naming the flag or file; `CommandParser` gives
argparse's own errors (a missing flag, a bad choice) the same one-line form
instead of argparse's usage block. ``--help`` states each default once.

Example:

  >>> parser = CommandParser(prog="unf-example")
  >>> _ = parser.add_argument("--steps", type=positive_int, default=100, help="inner steps")
  >>> parser.parse_args(["--steps", "5"]).steps
  5
  >>> "inner steps (default: 100)" in parser.format_help()
  True
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import pathlib
from typing import Any, NoReturn

import jax

from unf_lopt.tasks import base, registry


class DefaultsHelpFormatter(argparse.HelpFormatter):
  """Appends ``(default: X)`` to a flag's help, unless the help already states one.

  Flags without a meaningful default (``None``, or ``False`` for switches)
  show none.
  """

  def _get_help_string(self, action: argparse.Action) -> str:
    text = action.help or ""
    # `is`, not `in`: a default of 0 equals False but is worth stating.
    if (not action.option_strings or action.default is None or action.default is False
        or action.default == argparse.SUPPRESS or "default" in text.lower()):
      return text
    return f"{text} (default: %(default)s)"


class CommandParser(argparse.ArgumentParser):
  """An ``ArgumentParser`` whose errors are one line and whose help states defaults once."""

  def __init__(self, *args, **kwargs):
    kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
    super().__init__(*args, **kwargs)

  def error(self, message: str) -> NoReturn:
    # argparse would print the whole usage block first; the message names the flag. Some
    # messages (YAML's, a dataset's instructions) span lines: one line is easier to read in logs.
    self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())}\n")

  def fail(self, flag: str, message: Any) -> NoReturn:
    """Exits with status 2 and ``PROG: error: argument FLAG: MESSAGE``."""
    self.error(f"argument {flag}: {message}")


def _number(text: str, kind: type, what: str, test) -> Any:
  try:
    value = kind(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
  if not test(value):
    raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
  return value


def positive_int(text: str) -> int:
  """An ``int`` of at least 1 (an argparse ``type``)."""
  return _number(text, int, "a positive integer", lambda v: v >= 1)


def non_negative_int(text: str) -> int:
  """An ``int`` of at least 0 (an argparse ``type``)."""
  return _number(text, int, "a non-negative integer", lambda v: v >= 0)


def positive_float(text: str) -> float:
  """A finite ``float`` above 0 (an argparse ``type``)."""
  return _number(text, float, "a positive number", lambda v: math.isfinite(v) and v > 0)


def finite_float(text: str) -> float:
  """A finite ``float`` (an argparse ``type``)."""
  return _number(text, float, "a finite number", math.isfinite)


def open_fraction(text: str) -> float:
  """A ``float`` strictly between 0 and 1 (an argparse ``type``)."""
  return _number(text, float, "a number strictly between 0 and 1", lambda v: 0.0 < v < 1.0)


def json_object(text: str) -> dict[str, Any]:
  """A JSON object such as ``'{"image_size": 16}'`` (an argparse ``type``)."""
  try:
    value = json.loads(text)
  except json.JSONDecodeError as error:
    raise argparse.ArgumentTypeError(f"not valid JSON ({error}): {text!r}") from None
  if not isinstance(value, dict):
    raise argparse.ArgumentTypeError(
        f"must be a JSON object such as '{{\"key\": 1}}', got {text!r}")
  return value


def output_directory(text: str) -> pathlib.Path:
  """A directory to write into: existing, or creatable (no file on its path)."""
  path = pathlib.Path(text)
  for ancestor in (path, *path.parents):
    if ancestor.exists():
      if not ancestor.is_dir():
        what = "is a file" if ancestor == path else f"cannot be created: {ancestor} is a file"
        raise argparse.ArgumentTypeError(f"{path} {what}; give a directory")
      break
  return path


def output_file_stem(text: str) -> pathlib.Path:
  """A path to write ``STEM.png``-like files at: its directory must be creatable."""
  path = pathlib.Path(text)
  if path.is_dir():
    raise argparse.ArgumentTypeError(f"{path} is a directory; give a path without suffix, "
                                     f"e.g. {path / 'figure'}")
  output_directory(str(path.parent))
  return path


def existing_file(text: str) -> pathlib.Path:
  """A path to an existing file (an argparse ``type``)."""
  path = pathlib.Path(text)
  if not path.is_file():
    problem = "is a directory" if path.is_dir() else "does not exist"
    raise argparse.ArgumentTypeError(f"{path} {problem}")
  return path


def existing_directory(text: str) -> pathlib.Path:
  """A path to an existing directory (an argparse ``type``)."""
  path = pathlib.Path(text)
  if not path.is_dir():
    raise argparse.ArgumentTypeError(f"{path} {'is a file' if path.exists() else 'does not exist'}")
  return path


class _ListTasks(argparse.Action):
  """Prints every registered task with its description, then exits 0 (like ``--version``)."""

  def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
               help="list the registered tasks and exit"):  # pylint: disable=redefined-builtin
    super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

  def __call__(self, parser, namespace, values, option_string=None):
    print(format_task_list())
    parser.exit(0)


def add_fit_flags(parser: argparse.ArgumentParser, *, batch_size: int, batch_unit: str) -> None:
  """Adds ``--epochs``, ``--batch-size`` and ``--learning-rate`` of a weight-space model's training.

  Shared by the commands that train a model on a dataset of weights (INRs, a zoo).
  """
  parser.add_argument("--epochs", type=positive_int, default=10,
                      help="epochs (the best validation epoch is tested)")
  parser.add_argument("--batch-size", type=positive_int, default=batch_size,
                      help=f"{batch_unit} per batch")
  parser.add_argument("--learning-rate", type=positive_float, default=1e-3,
                      help="Adam learning rate")


def add_equivariant_layer_flags(parser: argparse.ArgumentParser, *, layers: str) -> None:
  """Adds ``--channels`` and ``--identity-share`` of the equivariant layers named in ``layers``."""
  parser.add_argument("--channels", type=positive_int, default=16,
                      help=f"channels of the equivariant layers ({layers})")
  parser.add_argument("--identity-share", type=open_fraction, default=None,
                      help="UNF: initial variance share of the identity term (e.g. 0.8; "
                           "default: all terms alike)")


def add_list_tasks_flag(parser: argparse.ArgumentParser) -> None:
  """Adds ``--list-tasks``, which works without the command's required flags."""
  parser.add_argument("--list-tasks", action=_ListTasks)


def format_task_list() -> str:
  """One line per registered task: its name and description."""
  described = registry.registered_tasks()
  width = max(map(len, described))
  lines = [f"{name:{width}s}  {description}" for name, description in described.items()]
  lines.append(f"{registry.LO_PREFIX + 'NAME':{width}s}  a learned_optimization task "
               "(optional extra: make lo-install)")
  return "\n".join(lines)


def task_option_error(name: str, options: dict[str, Any]) -> str | None:
  """Why ``options`` do not fit registered task ``name``'s constructor, or None.

  Each option must be a parameter of the constructor and of its default's
  type (a list for a sequence default).
  """
  parameters = registry.task_options(name)
  for key, value in options.items():
    if key not in parameters:
      accepted = ", ".join(parameters) or "none"
      return f"task {name} has no option {key!r}; its options: {accepted}"
    default = parameters[key].default
    if default is not inspect.Parameter.empty and not _same_kind(value, default):
      return (f"option {key!r} of task {name} takes a value like {json.dumps(_jsonable(default))}, "
              f"got {json.dumps(value)}")
  return None


def _jsonable(value: Any) -> Any:
  return list(value) if isinstance(value, tuple) else value


def _same_kind(value: Any, default: Any) -> bool:
  if default is None:
    return True  # e.g. data_dir: nothing to compare against
  if isinstance(default, bool) or isinstance(value, bool):
    return isinstance(value, bool) and isinstance(default, bool)
  if isinstance(default, float):
    return isinstance(value, (int, float))
  if isinstance(default, (tuple, list)):
    return isinstance(value, list) and (not default or all(_same_kind(v, default[0])
                                                           for v in value))
  return isinstance(value, type(default))


def build_task(parser: CommandParser, name: str, options: dict[str, Any] | None = None,
               task_flag: str = "--task", options_flag: str = "--task-options") -> base.Task:
  """The task ``name`` with ``options``, checked down to its parameter shapes; else exits 2."""
  options = options or {}
  if not name.startswith(registry.LO_PREFIX):
    if name not in registry.registered_tasks():
      try:
        registry.get_task(name)  # for its message, which suggests close names
      except KeyError as error:
        parser.fail(task_flag, f"{error.args[0]} (see --list-tasks)")
    problem = task_option_error(name, options)
    if problem:
      parser.fail(options_flag, problem)
  try:
    task = registry.get_task(name, **options)
    # Shapes only: catches options that break the model without computing anything.
    jax.eval_shape(task.init, jax.random.PRNGKey(0))
  except ImportError as error:
    parser.fail(task_flag, error)
  except KeyError as error:
    parser.fail(task_flag, error.args[0] if error.args else error)
  except (TypeError, ValueError) as error:
    parser.fail(options_flag if options else task_flag, f"task {name}: {error}")
  return task
