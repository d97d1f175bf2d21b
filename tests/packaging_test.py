"""The distribution installs one top-level import name, ``unf_lopt``, and nothing else."""

import configparser
import importlib.metadata
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
APPLICATION_FOLDERS = ("tasks", "meta_train", "evaluate")


def _setup_options():
  config = configparser.ConfigParser()
  config.read(ROOT / "setup.cfg")
  packages = config["options"]["packages"].split()
  package_dir = dict(line.split("=") for line in config["options"]["package_dir"].split("\n")
                     if line.strip())
  return packages, {key.strip(): value.strip() for key, value in package_dir.items()}


def test_installed_top_level_names_are_only_unf_lopt():
  names = {name for name, dists in importlib.metadata.packages_distributions().items()
           if "unf-lopt" in dists}
  assert names == {"unf_lopt"}


def test_every_source_package_is_installed_under_unf_lopt():
  packages, package_dir = _setup_options()
  assert all(name == "unf_lopt" or name.startswith("unf_lopt.") for name in packages)
  assert package_dir == {"unf_lopt": "unf_lopt", **{f"unf_lopt.{folder}": folder
                                                      for folder in APPLICATION_FOLDERS}}
  folder_of = {folder: package for package, folder in package_dir.items()}
  expected = set()
  for folder in ("unf_lopt", *APPLICATION_FOLDERS):
    for init in (ROOT / folder).rglob("__init__.py"):
      relative = init.parent.relative_to(ROOT / folder).parts
      expected.add(".".join((folder_of[folder], *relative)))
  assert set(packages) == expected


def test_no_module_imports_an_application_folder_as_a_top_level_name(tmp_path):
  # Run outside the checkout, so a stray `import tasks` cannot find the folder.
  script = """
import importlib, json, pkgutil, sys
failures, seen = {}, set()
# An editable install maps the application folders outside unf_lopt/'s own
# path, so each is walked from its own package.
for root in ("unf_lopt", "unf_lopt.tasks", "unf_lopt.meta_train", "unf_lopt.evaluate"):
  package = importlib.import_module(root)
  for module in pkgutil.walk_packages(package.__path__, root + "."):
    if module.name in seen or module.name.startswith(("unf_lopt.integrations.",
                                                      "unf_lopt.meta_train.lo_backend",
                                                      "unf_lopt.tasks.lo_tasks",
                                                      "unf_lopt.evaluate.benchmarks.bench_vs_learned_optimization")):
      continue  # these need the optional learned_optimization (tests_lo covers them)
    seen.add(module.name)
    try:
      importlib.import_module(module.name)
    except Exception as error:  # reported below, with the module's name
      failures[module.name] = repr(error)
stray = sorted(name for name in sys.modules
               if name.split(".")[0] in ("tasks", "meta_train", "evaluate"))
print(json.dumps({"failures": failures, "stray": stray, "count": len(seen)}))
"""
  result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, check=True)
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["count"] > 40  # the walk reached the application folders
  assert (report["failures"], report["stray"]) == ({}, [])


@pytest.mark.parametrize("folder", APPLICATION_FOLDERS)
def test_application_folders_are_subpackages(folder):
  module = __import__(f"unf_lopt.{folder}", fromlist=["_"])
  assert pathlib.Path(module.__file__).resolve().parent == ROOT / folder
