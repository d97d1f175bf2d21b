"""griffe extension: adapt two docstring habits of this code base to mkdocstrings.

* The docstrings follow the Google style guide, whose doctest section is
  ``Example:``; griffe treats only ``Examples:`` as doctests and would render
  the singular as Markdown (``>>>`` lines as block quotes).
* Some docstrings use Sphinx roles (``:class:`UNFLinear```); Markdown would
  show the role's colons. They become plain code spans (``~`` keeps the last
  component of a dotted name, as in Sphinx).
"""

import re

import griffe

EXAMPLE_HEADING = re.compile(r"^(\s*)Example:\s*$", flags=re.M)
SPHINX_ROLE = re.compile(r":(?:mod|class|func|meth|attr|data|obj|exc):`(~?)([\w.]+)`")


def _code_span(match: re.Match) -> str:
  shorten, name = match.groups()
  return f"`{name.rsplit('.', 1)[-1] if shorten else name}`"


class DocstringHabits(griffe.Extension):
  """Rewrites ``Example:`` headings and Sphinx roles before griffe parses a docstring."""

  def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
    del kwargs  # the other event arguments are not needed
    if obj.docstring is not None:
      text = EXAMPLE_HEADING.sub(r"\1Examples:", obj.docstring.value)
      obj.docstring.value = SPHINX_ROLE.sub(_code_span, text)
