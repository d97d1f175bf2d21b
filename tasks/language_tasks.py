"""Language-modelling tasks: the byte-level RNN and the subword Transformer on LM1B."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import unf_lopt as U
from unf_lopt.tasks import base, data, models, tokenizers


class LanguageModelTask(base.Task):
  """Next-token negative log-likelihood with teacher forcing, padding masked.

  A batch is ``{"tokens": [batch, length + 1] int32}``: each sentence encoded,
  ``EOS``-terminated, truncated and right-padded (`tokenizers.encode_sentences`);
  the model reads ``tokens[:, :-1]`` and predicts ``tokens[:, 1:]``.

  Args:
    name: registry name.
    corpus: a text dataset of `tasks.data`. ``lm1b`` falls back to the
      shipped Brown Corpus (with a notice) when LM1B is not prepared.
    tokenizer: a `tokenizers.ByteTokenizer` or `tokenizers.SentencePieceTokenizer`.
    model: ``models.RNNLM`` or ``models.TransformerLM`` with a matching vocabulary.
    length: tokens per sequence.
    batch_size: sequences per batch.
    data_dir: tfds data directory.
  """

  def __init__(self, name: str, *, corpus: str, tokenizer, model: nn.Module, length: int,
               batch_size: int, data_dir=None):
    if model.vocab_size != tokenizer.vocab_size:
      raise ValueError(f"{name}: model vocabulary {model.vocab_size} != tokenizer vocabulary "
                       f"{tokenizer.vocab_size}")
    self.name = name
    self.corpus = corpus
    self.tokenizer = tokenizer
    self.length = length
    self.batch_size = batch_size
    self.data_dir = data_dir
    self.num_classes = tokenizer.vocab_size
    self._model = model
    self.io_axes = frozenset({"vocab"} if isinstance(model, models.RNNLM) else {"Embed_0.vocab"})

  @property
  def model(self) -> nn.Module:
    return self._model

  @functools.cached_property
  def corpus_used(self) -> str:
    """The corpus actually read (``brown_corpus`` when LM1B is missing)."""
    return data.resolve_text_dataset(self.corpus, self.data_dir)

  def dummy_batch(self):
    return {"tokens": np.zeros((self.batch_size, self.length + 1), np.int32)}

  def _inputs(self, batch):
    return batch["tokens"][:, :-1]

  def _read_split(self, split):
    sentences = data.load_text(self.corpus_used, split, self.data_dir)
    return {"tokens": tokenizers.encode_sentences(self.tokenizer, sentences, self.length)}

  def metrics(self, params, batch):
    tokens = batch["tokens"]
    logits = self.model.apply({"params": params}, tokens[:, :-1])
    targets = tokens[:, 1:]
    weights = (targets != tokenizers.PAD_ID).astype(logits.dtype)
    count = jnp.maximum(weights.sum(), 1.0)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    correct = (jnp.argmax(logits, -1) == targets).astype(logits.dtype)
    return {"loss": (losses * weights).sum() / count, "accuracy": (correct * weights).sum() / count}

  def spec(self, params=None):
    if params is None:
      params = jax.eval_shape(self.init, jax.random.PRNGKey(0))
    if isinstance(self.model, models.RNNLM):
      # The initial state's leading size-1 axis gets its own (trivial) name,
      # the convention that reproduces the UNF count 8,043 of the UNF paper
      # (Zhou et al. 2024), Table 3.
      return {"embed": U.embed_spec("vocab", "embed"),
              "rnn": {"input": U.dense_spec("embed", "hidden"),
                      "cell": {"recurrent": U.dense_spec("hidden", "hidden")},
                      "initial_state": ("state", "hidden")},
              "head": U.dense_spec("hidden", "vocab")}
    return U.infer_spec(params)


def rnn_lm1b(length: int = 16, batch_size: int = 64, corpus: str = "lm1b", data_dir=None,
             name: str = "rnn_lm1b") -> LanguageModelTask:
  """Byte-level ReLU RNN LM (embedding 32, hidden 64), sequences of 16 bytes, batch 64."""
  tokenizer = tokenizers.ByteTokenizer()
  return LanguageModelTask(name, corpus=corpus, tokenizer=tokenizer,
                           model=models.RNNLM(tokenizer.vocab_size, 32, 64), length=length,
                           batch_size=batch_size, data_dir=data_dir)


def transformer_lm1b(length: int = 8, batch_size: int = 8, vocab_size: int = 32_000,
                     corpus: str = "lm1b", data_dir=None,
                     name: str = "transformer_lm1b") -> LanguageModelTask:
  """2-block pre-LN Transformer LM (d_model 32, 4 heads x 32, MLP 128), 32k subwords, length 8."""
  tokenizer = tokenizers.sentencepiece_tokenizer(vocab_size)
  return LanguageModelTask(name, corpus=corpus, tokenizer=tokenizer,
                           model=models.TransformerLM(tokenizer.vocab_size), length=length,
                           batch_size=batch_size, data_dir=data_dir)


def tiny_rnn(name: str = "tiny_rnn") -> LanguageModelTask:
  """Byte RNN (embedding 8, hidden 16) on 400 shipped Brown sentences, length 8. For tests."""
  tokenizer = tokenizers.ByteTokenizer()
  return LanguageModelTask(name, corpus="tiny_brown_corpus", tokenizer=tokenizer,
                           model=models.RNNLM(tokenizer.vocab_size, 8, 16), length=8,
                           batch_size=16)


def tiny_transformer(name: str = "tiny_transformer") -> LanguageModelTask:
  """Byte-vocabulary Transformer (d_model 8, 2 heads x 4, MLP 16) on shipped Brown text.

  For tests.
  """
  tokenizer = tokenizers.ByteTokenizer()
  return LanguageModelTask(
      name, corpus="tiny_brown_corpus", tokenizer=tokenizer,
      model=models.TransformerLM(tokenizer.vocab_size, d_model=8, num_heads=2, key_size=4,
                                 mlp_dim=16),
      length=8, batch_size=8)


