"""Character-level addition ("15+20=" -> "35<EOS>") and the seq2seq GRU that learns it.

Tokens: digits 0-9, ``+``, ``=`` (also the decoder's start symbol), ``EOS``
and ``PAD``. Operands have 1 to ``max_digits`` digits (the paper's 5 by
default). Inputs are left-padded to ``input_length(max_digits)`` so the
encoder always ends on ``=``; targets are the sum's digits, ``EOS``, then
``PAD``, ``target_length(max_digits)`` tokens.

Example:

  >>> from tasks.zoo import addition
  >>> addition.decode(addition.encode_problem(15, 20)[0])
  '15+20='
  >>> addition.decode(addition.encode_problem(15, 20)[1])
  '35<EOS>'
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import unf_lopt as U

MAX_DIGITS = 5
PLUS, EQUALS, EOS, PAD = 10, 11, 12, 13
VOCAB_SIZE = 14


def input_length(max_digits: int = MAX_DIGITS) -> int:
  return 2 * max_digits + 2


def target_length(max_digits: int = MAX_DIGITS) -> int:
  return max_digits + 2  # the sum has up to max_digits + 1 digits, then EOS

_SYMBOLS = {PLUS: "+", EQUALS: "=", EOS: "<EOS>", PAD: ""}


def encode_problem(a: int, b: int, max_digits: int = MAX_DIGITS) -> tuple[np.ndarray, np.ndarray]:
  """``(input, target)`` token arrays for ``a + b``.

  A reference for tests: one problem at a time.
  """
  if max(a, b) >= 10**max_digits or min(a, b) < 0:
    raise ValueError(f"operands of {a}+{b} must have 1 to {max_digits} digits")
  text = [int(c) for c in str(a)] + [PLUS] + [int(c) for c in str(b)] + [EQUALS]
  inputs = np.full(input_length(max_digits), PAD, np.int32)
  inputs[len(inputs) - len(text):] = text
  answer = [int(c) for c in str(a + b)] + [EOS]
  target = np.full(target_length(max_digits), PAD, np.int32)
  target[:len(answer)] = answer
  return inputs, target


def decode(tokens) -> str:
  return "".join(_SYMBOLS.get(int(t), str(int(t))) for t in tokens)


def sample_problems(key: jax.Array, count: int,
                    max_digits: int = MAX_DIGITS) -> tuple[jax.Array, jax.Array]:
  """Random problems on the device: digit counts uniform in 1..max_digits, then uniform values."""
  digit_key, value_key = jax.random.split(key)
  digits = jax.random.randint(digit_key, (2, count), 1, max_digits + 1)
  low = jnp.where(digits == 1, 0, 10 ** (digits - 1))
  spread = jax.random.uniform(value_key, (2, count)) * (10 ** digits - low)
  operands = low + spread.astype(jnp.int32)
  return _encode_batch(operands[0], operands[1], max_digits)


def _digits_of(values: jax.Array, width: int) -> tuple[jax.Array, jax.Array]:
  """Most-significant-first digits ``[n, width]`` (left-aligned) and their counts."""
  powers = 10 ** jnp.arange(width - 1, -1, -1)
  all_digits = (values[:, None] // powers) % 10
  count = jnp.maximum(1, jnp.sum(values[:, None] >= powers, axis=1))
  shift = width - count  # drop leading zeros by rolling them out
  index = (jnp.arange(width)[None, :] + shift[:, None]) % width
  return jnp.take_along_axis(all_digits, index, axis=1), count


def _encode_batch(a: jax.Array, b: jax.Array, max_digits: int) -> tuple[jax.Array, jax.Array]:
  a_digits, a_count = _digits_of(a, max_digits)
  b_digits, b_count = _digits_of(b, max_digits)
  sum_digits, sum_count = _digits_of(a + b, max_digits + 1)
  position = jnp.arange(input_length(max_digits))[None, :]
  start = input_length(max_digits) - (a_count + b_count + 2)[:, None]
  offset = position - start
  a_part = jnp.take_along_axis(a_digits, jnp.clip(offset, 0, max_digits - 1), axis=1)
  b_offset = offset - a_count[:, None] - 1
  b_part = jnp.take_along_axis(b_digits, jnp.clip(b_offset, 0, max_digits - 1), axis=1)
  inputs = jnp.where(offset < 0, PAD,
           jnp.where(offset < a_count[:, None], a_part,
           jnp.where(offset == a_count[:, None], PLUS,
           jnp.where(b_offset < b_count[:, None], b_part, EQUALS))))
  target_position = jnp.arange(target_length(max_digits))[None, :]
  sum_part = jnp.take_along_axis(sum_digits, jnp.clip(target_position, 0, max_digits), axis=1)
  target = jnp.where(target_position < sum_count[:, None], sum_part,
           jnp.where(target_position == sum_count[:, None], EOS, PAD))
  return inputs.astype(jnp.int32), target.astype(jnp.int32)


class Seq2SeqGRU(nn.Module):
  """Embedding, a GRU encoder, a GRU decoder started from the encoder's state, a linear head."""

  hidden: int = 128
  embed_dim: int = 16

  def setup(self):
    self.embed = nn.Embed(VOCAB_SIZE, self.embed_dim)
    self.encoder = nn.GRUCell(self.hidden)
    self.decoder = nn.GRUCell(self.hidden)
    self.head = nn.Dense(VOCAB_SIZE)

  def encode(self, inputs):
    state = jnp.zeros((inputs.shape[0], self.hidden))
    for t in range(inputs.shape[1]):
      state, _ = self.encoder(state, self.embed(inputs[:, t]))
    return state

  def __call__(self, inputs, targets):
    """Teacher-forced logits ``[batch, target length, vocab]``."""
    state = self.encode(inputs)
    previous = jnp.full((inputs.shape[0],), EQUALS)
    logits = []
    for t in range(targets.shape[1]):
      state, output = self.decoder(state, self.embed(previous))
      logits.append(self.head(output))
      previous = targets[:, t]
    return jnp.stack(logits, axis=1)

  def greedy(self, inputs, length: int):
    """Greedy decoding of ``length`` tokens."""
    state = self.encode(inputs)
    previous = jnp.full((inputs.shape[0],), EQUALS)
    tokens = []
    for _ in range(length):
      state, output = self.decoder(state, self.embed(previous))
      previous = jnp.argmax(self.head(output), axis=-1)
      tokens.append(previous)
    return jnp.stack(tokens, axis=1)


def spec() -> dict:
  """The zoo models' weight-space spec: one hidden name shared by encoder and decoder."""
  return {"embed": U.embed_spec("vocab", "embed"),
          "encoder": U.recurrent_cell_spec("embed", "hidden", cell="gru"),
          "decoder": U.recurrent_cell_spec("embed", "hidden", cell="gru"),
          "head": U.dense_spec("hidden", "vocab")}


def loss(model: Seq2SeqGRU, params, inputs, targets, weights=None) -> jax.Array:
  """Cross-entropy over non-padding target tokens; ``weights`` [batch] masks examples."""
  logits = model.apply({"params": params}, inputs, targets)
  token_loss = -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)[..., 0]
  mask = (targets != PAD).astype(logits.dtype)
  if weights is not None:
    mask = mask * weights[:, None]
  return (token_loss * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def exact_match(predicted: jax.Array, targets: jax.Array) -> jax.Array:
  """Per example: every target token up to and including EOS predicted correctly."""
  relevant = targets != PAD
  return jnp.all((predicted == targets) | ~relevant, axis=1)


def success_rate(model: Seq2SeqGRU, params, inputs, targets) -> jax.Array:
  predicted = model.apply({"params": params}, inputs, targets.shape[1], method=Seq2SeqGRU.greedy)
  return exact_match(predicted, targets).mean()
