"""MkDocs hook: lay out the sources as they are imported, for mkdocstrings.

setup.cfg installs the repository folders ``tasks``, ``meta_train`` and
``evaluate`` as ``unf_lopt.tasks``, ``unf_lopt.meta_train`` and
``unf_lopt.evaluate`` (``package_dir``). griffe reads sources without importing
them, so it needs a folder where those packages sit inside ``unf_lopt``: this
hook builds one from symbolic links (``build/api_src``), following
``package_dir`` so that it stays right when that mapping changes.
"""

import configparser
import pathlib
import shutil

from mkdocs import plugins

ROOT = pathlib.Path(__file__).resolve().parents[1]
API_SRC = ROOT / "build" / "api_src"


def package_dirs() -> dict[str, pathlib.Path]:
  """Import name -> source folder, from setup.cfg's ``[options] package_dir``."""
  setup = configparser.ConfigParser()
  setup.read(ROOT / "setup.cfg")
  mapping = {}
  for line in setup["options"]["package_dir"].strip().splitlines():
    name, _, folder = (part.strip() for part in line.partition("="))
    mapping[name] = ROOT / folder
  return mapping


def link_tree(mapping: dict[str, pathlib.Path]) -> None:
  """Links every package folder at the place its import name puts it."""
  shutil.rmtree(API_SRC, ignore_errors=True)
  # Parents first, so that a subpackage's link goes into its parent's folder.
  for name in sorted(mapping, key=lambda n: n.count(".")):
    target = API_SRC.joinpath(*name.split("."))
    target.mkdir(parents=True, exist_ok=True)
    for entry in mapping[name].iterdir():
      if entry.name == "__pycache__" or (target / entry.name).exists():
        continue
      (target / entry.name).symlink_to(entry)


@plugins.event_priority(100)  # before mkdocstrings reads any source
def on_config(config):
  link_tree(package_dirs())
  return config
