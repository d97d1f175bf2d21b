"""The networks of the UNF paper's four tasks, for benchmarks and demos.

Shapes follow PAPER_FACTS section 5 (FashionMNIST 8x8 MLP, CIFAR-10 CNN, LM1B
byte-level RNN with a learnable initial state, LM1B 32k-vocabulary
Transformer). ``weight_space(name)`` gives their params and inferred spec.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

import unf_lopt as U


class MLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(10)(nn.relu(nn.Dense(32)(x)))


class CNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(16, (3, 3), strides=2)(x))
    x = nn.relu(nn.Conv(32, (3, 3))(x))
    return nn.Dense(10)(x.mean(axis=(1, 2)))


class RNNLM(nn.Module):
  vocab: int = 259

  @nn.compact
  def __call__(self, tokens):
    x = nn.RNN(nn.SimpleCell(64))(nn.Embed(self.vocab, 32)(tokens))
    return nn.Dense(self.vocab)(x)


class Block(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = x + nn.MultiHeadDotProductAttention(num_heads=4, qkv_features=128)(nn.LayerNorm()(x))
    return x + nn.Dense(32)(nn.gelu(nn.Dense(128)(nn.LayerNorm()(x))))


class TransformerLM(nn.Module):
  vocab: int = 32_000

  @nn.compact
  def __call__(self, tokens):
    x = Block()(Block()(nn.Embed(self.vocab, 32)(tokens)))
    return nn.Dense(self.vocab)(nn.LayerNorm()(x))


def weight_space(name: str):
  """(params, spec) of the paper task's network, spec by ``infer_spec``."""
  key = jax.random.PRNGKey(0)
  if name == "mlp":
    params = MLP().init(key, jnp.zeros((1, 64)))["params"]
  elif name == "cnn":
    params = CNN().init(key, jnp.zeros((1, 16, 16, 3)))["params"]
  elif name == "rnn":
    params = dict(RNNLM().init(key, jnp.zeros((1, 4), jnp.int32))["params"])
    params["initial_state"] = jnp.zeros((1, 64))
    return params, U.infer_spec(params, overrides={"initial_state": (None, "SimpleCell_0.out")})
  elif name == "transformer":
    params = TransformerLM().init(key, jnp.zeros((1, 4), jnp.int32))["params"]
  else:
    raise ValueError(f"unknown spec {name!r}")
  return params, U.infer_spec(params)
