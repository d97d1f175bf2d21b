"""Tokenizers of the language tasks: bytes (RNN) and SentencePiece subwords (Transformer).

Both reserve the same special ids, so batches and loss masks do not depend on
the tokenizer: ``PAD_ID`` (masked in the loss), ``EOS_ID`` (ends a sentence)
and ``UNK_ID``.

Example:

  >>> from unf_lopt.tasks.tokenizers import ByteTokenizer, encode_sentences
  >>> tokenizer = ByteTokenizer()
  >>> tokenizer.vocab_size, tokenizer.encode("hi")
  (259, [107, 108])
  >>> encode_sentences(tokenizer, ["hi"], length=4).tolist()
  [[107, 108, 1, 0, 0]]
"""

from __future__ import annotations

import io
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from unf_lopt import extras
from unf_lopt.atomic import write_atomic

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
NUM_SPECIAL = 3
SHIPPED_VOCAB_SIZE = 32_000
SHIPPED_SENTENCEPIECE_FILE = (pathlib.Path(__file__).resolve().parent / "corpora"
                              / "brown_sp32k.model")


class ByteTokenizer:
  """UTF-8 bytes shifted past the special ids: vocabulary 256 + 3."""

  vocab_size = 256 + NUM_SPECIAL

  def encode(self, text: str) -> list[int]:
    return [b + NUM_SPECIAL for b in text.encode("utf-8")]

  def decode(self, ids: Sequence[int]) -> str:
    return bytes(i - NUM_SPECIAL for i in ids if i >= NUM_SPECIAL).decode("utf-8", "replace")


class SentencePieceTokenizer:
  """A SentencePiece model whose special ids are ``PAD_ID``, ``EOS_ID``, ``UNK_ID``."""

  def __init__(self, model_proto: bytes, name: str = "sentencepiece"):
    sentencepiece = extras.require("sentencepiece", "data")
    self._processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
    self.name = name
    specials = (self._processor.pad_id(), self._processor.eos_id(), self._processor.unk_id())
    if specials != (PAD_ID, EOS_ID, UNK_ID):
      raise ValueError(f"{name}: special ids (pad, eos, unk) are {specials}; this project "
                       f"needs {(PAD_ID, EOS_ID, UNK_ID)} (see train_sentencepiece)")
    self.vocab_size = self._processor.get_piece_size()

  def encode(self, text: str) -> list[int]:
    return self._processor.encode(text)

  def decode(self, ids: Sequence[int]) -> str:
    return self._processor.decode([int(i) for i in ids if i >= NUM_SPECIAL])


def train_sentencepiece(sentences: Sequence[str], vocab_size: int) -> bytes:
  """Trains a unigram SentencePiece model with this project's special ids."""
  sentencepiece = extras.require("sentencepiece", "data")
  model = io.BytesIO()
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size,
      model_type="unigram", pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
      character_coverage=1.0, num_threads=1, minloglevel=2)
  return model.getvalue()


def sentencepiece_tokenizer(vocab_size: int = SHIPPED_VOCAB_SIZE,
                            cache_dir: os.PathLike | str | None = None) -> SentencePieceTokenizer:
  """The Brown-Corpus SentencePiece tokenizer with ``vocab_size`` pieces.

  The 32k model ships with the package. Other sizes are trained once on the
  Brown training split (a few seconds) and cached in ``cache_dir`` (default:
  ``<data dir>/unf_lopt_tokenizers``).
  """
  if vocab_size == SHIPPED_VOCAB_SIZE:
    return SentencePieceTokenizer(SHIPPED_SENTENCEPIECE_FILE.read_bytes(), "brown_sp32k")
  from unf_lopt.tasks import data  # pylint: disable=g-import-not-at-top
  cache_dir = (pathlib.Path(cache_dir) if cache_dir
               else data.default_data_dir() / "unf_lopt_tokenizers")
  path = cache_dir / f"brown_sp{vocab_size}.model"
  if not path.exists():
    proto = train_sentencepiece(data.read_brown_corpus()["train"], vocab_size)
    write_atomic(path, proto)
  return SentencePieceTokenizer(path.read_bytes(), path.stem)


def encode_sentences(tokenizer, sentences: Sequence[str], length: int) -> np.ndarray:
  """``[N, length + 1]`` int32: tokens, then ``EOS_ID``, truncated, right-padded with ``PAD_ID``.

  One extra position so that inputs ``[:, :-1]`` and targets ``[:, 1:]`` both
  have ``length`` tokens (teacher forcing).
  """
  rows = np.full((len(sentences), length + 1), PAD_ID, np.int32)
  for row, sentence in zip(rows, sentences):
    ids = (tokenizer.encode(sentence) + [EOS_ID])[:length + 1]
    row[:len(ids)] = ids
  return rows
