"""The four task networks of the UNF paper (Zhou et al. 2024, Appendix B.1), in flax.linen.

Sizes are fields so that the ``tiny_*`` tasks reuse the same code.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from unf_lopt.tasks import conv


class MLP(nn.Module):
  """ReLU MLP on flattened inputs; the paper's is ``64 -> 32 -> 10``."""

  hidden_sizes: Sequence[int] = (32,)
  num_classes: int = 10

  @nn.compact
  def __call__(self, images):
    x = images.reshape(images.shape[0], -1)
    for width in self.hidden_sizes:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.num_classes)(x)


class CNN(nn.Module):
  """conv3x3(16, stride 2) -> ReLU -> conv3x3(32) -> ReLU -> mean pool -> linear.

  ``conv_impl`` chooses how the convolutions are computed, never what: ``"lax"``
  is ``nn.Conv`` (``lax.conv_general_dilated``); ``"patches"`` is
  `tasks.conv.PatchConv`, strided slices and one matmul, which is much faster
  where inner training is vmapped over per-run parameters on CPU (PES,
  evaluation over seeds); ``"auto"`` (default) is ``"patches"`` when
  ``jax.default_backend()`` is ``"cpu"`` and ``"lax"`` otherwise. The layers are
  ``Conv_0``, ``Conv_1``, ... with the same parameters for every choice, so
  parameters and checkpoints are interchangeable.
  """

  channels: Sequence[int] = (16, 32)
  strides: Sequence[int] = (2, 1)
  num_classes: int = 10
  conv_impl: str = "auto"

  def __post_init__(self):
    if self.conv_impl not in conv.CONV_IMPLS:  # fail at construction, not first trace
      raise ValueError(f"conv_impl must be one of {', '.join(conv.CONV_IMPLS)}; "
                       f"got {self.conv_impl!r}")
    super().__post_init__()

  @nn.compact
  def __call__(self, images):
    conv_layer = nn.Conv if conv.resolve_conv_impl(self.conv_impl) == "lax" else conv.PatchConv
    x = images
    for index, (width, stride) in enumerate(zip(self.channels, self.strides)):
      x = nn.relu(conv_layer(width, (3, 3), strides=stride, name=f"Conv_{index}")(x))
    return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))


def _identity_init(key, shape, dtype=jnp.float32):
  del key
  return jnp.eye(*shape, dtype=dtype)


class _ReluStep(nn.Module):
  hidden: int

  @nn.compact
  def __call__(self, state, projected_input):
    recurrent = nn.Dense(self.hidden, kernel_init=_identity_init, name="recurrent")
    state = nn.relu(projected_input + recurrent(state))
    return state, state


class ReluRNN(nn.Module):
  """Identity-initialised ReLU RNN with input and recurrent biases and a learnable initial state.

  Params: ``input`` (kernel, bias), ``cell/recurrent`` (kernel, bias) and
  ``initial_state`` of shape ``(1, hidden)``.
  """

  hidden: int = 64

  @nn.compact
  def __call__(self, inputs):  # [batch, time, features]
    projected = nn.Dense(self.hidden, name="input")(inputs)
    initial_state = self.param("initial_state", nn.initializers.zeros, (1, self.hidden))
    state = jnp.broadcast_to(initial_state, (inputs.shape[0], self.hidden))
    scan = nn.scan(_ReluStep, variable_broadcast="params", split_rngs={"params": False},
                   in_axes=1, out_axes=1)
    _, states = scan(self.hidden, name="cell")(state, projected)
    return states


class RNNLM(nn.Module):
  """Embedding -> ReLU RNN -> linear head over the vocabulary."""

  vocab_size: int = 259
  embed_dim: int = 32
  hidden: int = 64

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(self.vocab_size, self.embed_dim, name="embed")(tokens)
    return nn.Dense(self.vocab_size, name="head")(ReluRNN(self.hidden, name="rnn")(x))


class FlatHeadsAttention(nn.Module):
  """Multi-head self-attention with haiku's parameter layout.

  ``query``, ``key`` and ``value`` are plain ``Dense(num_heads * key_size)``
  (kernel ``[d_model, heads * key_size]``) and ``out`` maps the concatenated
  heads back (kernel ``[heads * key_size, d_model]``). The function, and the
  initial distribution of every weight, are those of flax's
  ``MultiHeadDotProductAttention``, whose kernels keep heads on their own axis
  (``[d_model, heads, key_size]``). The UNF paper's Transformer spec names the
  flattened axis, so it needs this layout.
  """

  num_heads: int = 4
  key_size: int = 32

  @nn.compact
  def __call__(self, x, mask):
    width = self.num_heads * self.key_size

    def heads(name):
      y = nn.Dense(width, name=name)(x)
      return y.reshape(*y.shape[:-1], self.num_heads, self.key_size)

    y = nn.dot_product_attention(heads("query"), heads("key"), heads("value"), mask=mask)
    return nn.Dense(x.shape[-1], name="out")(y.reshape(*y.shape[:-2], width))


class Block(nn.Module):
  """Pre-LayerNorm Transformer block: causal self-attention and a GELU MLP.

  ``flat_heads=True`` stores the attention weights as `FlatHeadsAttention`
  (same function).
  """

  num_heads: int = 4
  key_size: int = 32
  mlp_dim: int = 128
  flat_heads: bool = False

  @nn.compact
  def __call__(self, x, mask):
    if self.flat_heads:
      attention = FlatHeadsAttention(self.num_heads, self.key_size)
    else:
      attention = nn.MultiHeadDotProductAttention(
          num_heads=self.num_heads, qkv_features=self.num_heads * self.key_size,
          out_features=x.shape[-1])
    x = x + attention(nn.LayerNorm()(x), mask=mask)
    hidden = nn.gelu(nn.Dense(self.mlp_dim)(nn.LayerNorm()(x)))
    return x + nn.Dense(x.shape[-1])(hidden)


class TransformerLM(nn.Module):
  """Decoder-only LM without positional embedding; final LayerNorm, linear head.

  ``flat_heads=True``: attention weights in haiku's layout (`FlatHeadsAttention`).
  """

  vocab_size: int = 32_000
  d_model: int = 32
  num_blocks: int = 2
  num_heads: int = 4
  key_size: int = 32
  mlp_dim: int = 128
  flat_heads: bool = False

  @nn.compact
  def __call__(self, tokens):
    # Right padding: a causal mask alone keeps real tokens from seeing pads.
    mask = nn.make_causal_mask(tokens)
    x = nn.Embed(self.vocab_size, self.d_model)(tokens)
    for _ in range(self.num_blocks):
      x = Block(self.num_heads, self.key_size, self.mlp_dim, self.flat_heads)(x, mask)
    return nn.Dense(self.vocab_size)(nn.LayerNorm()(x))


def count_params(params) -> int:
  return sum(int(leaf.size) for leaf in jax.tree.leaves(params))
