"""The README and the docs: their Python examples run as written, and they cover every command."""

import configparser
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def python_blocks(path: pathlib.Path) -> list[str]:
  return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def run_blocks(path: pathlib.Path) -> None:
  for block in python_blocks(path):
    exec(compile(block, str(path), "exec"), {"__name__": "readme_example"})


def console_scripts() -> list[str]:
  setup = configparser.ConfigParser()
  setup.read(ROOT / "setup.cfg")
  lines = setup["options.entry_points"]["console_scripts"].strip().splitlines()
  return [line.split("=")[0].strip() for line in lines]


@pytest.mark.slow
def test_readme_python_examples_run():
  assert len(python_blocks(README)) >= 3
  run_blocks(README)


DOC_PAGES_WITH_PYTHON = sorted(
    path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md") if python_blocks(path))


@pytest.mark.slow
@pytest.mark.parametrize("page", DOC_PAGES_WITH_PYTHON)
def test_docs_python_examples_run(page):
  run_blocks(DOCS / page)


def test_readme_is_short():
  assert len(README.read_text().splitlines()) <= 200


def test_every_command_has_a_guide_linked_from_the_readme():
  readme = README.read_text()
  nav = (ROOT / "mkdocs.yml").read_text()
  for command in console_scripts():
    guide = f"commands/{command}.md"
    assert (DOCS / guide).is_file(), f"no guide docs/{guide}"
    assert f"docs/{guide}" in readme, f"README does not link docs/{guide}"
    assert guide in nav, f"mkdocs.yml nav lacks {guide}"
    assert f"# {command}" in (DOCS / guide).read_text()
