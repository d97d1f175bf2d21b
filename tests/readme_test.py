"""The Python examples of README.md run as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run():
  blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
  assert len(blocks) >= 2
  for block in blocks:
    exec(compile(block, str(README), "exec"), {"__name__": "readme_example"})
