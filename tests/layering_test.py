"""Layering, read from the source (no module is imported): the library never imports the
application, and no modules import each other in a cycle."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Repository folder -> the package it installs as (setup.cfg, package_dir).
FOLDERS = {"unf_lopt": "unf_lopt", "tasks": "unf_lopt.tasks",
           "meta_train": "unf_lopt.meta_train", "evaluate": "unf_lopt.evaluate"}
APPLICATION = tuple(package for folder, package in FOLDERS.items() if folder != "unf_lopt")


def module_files() -> dict[str, pathlib.Path]:
  """``{module name: file}`` of every module of the four folders."""
  modules = {}
  for folder, package in FOLDERS.items():
    for path in sorted((ROOT / folder).rglob("*.py")):
      parts = path.relative_to(ROOT / folder).with_suffix("").parts
      if parts[-1] == "__init__":
        parts = parts[:-1]
      modules[".".join((package, *parts))] = path
  return modules


MODULES = module_files()


def _is_type_checking_block(node: ast.AST) -> bool:
  test = getattr(node, "test", None)
  return isinstance(node, ast.If) and (
      (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
      or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _import_nodes(tree: ast.Module, module_level: bool):
  """Import statements; with ``module_level``, only those that run when the module is imported.

  Module level includes ``if``/``try``/``with`` blocks, but not function or class
  bodies (lazy imports) nor ``if TYPE_CHECKING:`` blocks.
  """
  stack = list(tree.body)
  while stack:
    node = stack.pop()
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      yield node
    elif module_level and (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                              ast.ClassDef, ast.Lambda))
                           or _is_type_checking_block(node)):
      continue
    else:
      stack.extend(ast.iter_child_nodes(node))


def imported_names(module: str, path: pathlib.Path, module_level: bool) -> set[str]:
  """The dotted names ``module`` imports (``from a import b`` gives ``a.b`` when that is a
  module of ours, else ``a``); relative imports resolved."""
  is_package = path.name == "__init__.py"
  names = set()
  for node in _import_nodes(ast.parse(path.read_text(), str(path)), module_level):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
      continue
    base = node.module or ""
    if node.level:
      anchor = module.split(".")
      anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
      base = ".".join(anchor + ([base] if base else []))
    for alias in node.names:
      candidate = f"{base}.{alias.name}"
      names.add(candidate if candidate in MODULES else base)
  return names


def import_graph(module_level: bool = True) -> dict[str, set[str]]:
  """Imports between our modules, ``{module: modules it imports}``; with ``module_level``
  only those that run on import, else lazy (function-level) imports too."""
  return {module: {name for name in imported_names(module, path, module_level)
                   if name in MODULES and name != module}
          for module, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle ``[a, b, ..., a]`` of ``graph``, or None (iterative depth-first search)."""
  state = {}  # absent: unvisited; 1: on the current path; 2: done
  for root in sorted(graph):
    if root in state:
      continue
    path, iterators = [root], [iter(sorted(graph[root]))]
    state[root] = 1
    while path:
      successor = next(iterators[-1], None)
      if successor is None:
        state[path.pop()] = 2
        iterators.pop()
      elif state.get(successor) == 1:
        return path[path.index(successor):] + [successor]
      elif successor not in state:
        state[successor] = 1
        path.append(successor)
        iterators.append(iter(sorted(graph[successor])))
  return None


def test_the_walk_sees_all_four_folders():
  for package in FOLDERS.values():
    assert package in MODULES, package
  assert {"unf_lopt.meta_train.trainer", "unf_lopt.tasks.registry",
          "unf_lopt.integrations.learned_optimization"} <= set(MODULES)
  graph = import_graph()
  assert "unf_lopt.meta_train.outer_loop" in graph["unf_lopt.meta_train.trainer"]
  # A lazy import is seen only when asked for.
  assert "unf_lopt.tasks.lo_tasks" not in graph["unf_lopt.tasks.registry"]
  assert "unf_lopt.tasks.lo_tasks" in import_graph(module_level=False)["unf_lopt.tasks.registry"]


def test_the_library_imports_no_application_package():
  offenders = []
  for module, path in MODULES.items():
    if module.startswith(tuple(package + "." for package in APPLICATION)) or module in APPLICATION:
      continue  # the application itself
    for name in sorted(imported_names(module, path, module_level=False)):
      if name in APPLICATION or name.startswith(tuple(package + "." for package in APPLICATION)):
        offenders.append(f"{module} ({path.relative_to(ROOT)}) imports {name}")
  assert not offenders, "the library core imports the application:\n" + "\n".join(offenders)


@pytest.mark.parametrize("module_level", [True, False], ids=["module-level", "with-lazy"])
def test_module_imports_have_no_cycle(module_level):
  # Lazy imports count too: two modules that import each other, one of them
  # inside a function, are still one concept split in two.
  cycle = find_cycle(import_graph(module_level))
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": set(), "c": {"c"}}, ["c", "c"]),
    ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, None),
])
def test_find_cycle_reports_the_cycle(graph, expected):
  assert find_cycle(graph) == expected
