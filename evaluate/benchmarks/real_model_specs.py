"""Real-model-like weight spaces with their true specs, written by hand.

Three flax.linen models as people write them, at real sizes (the tiny gallery
of `unf_lopt.tasks.real_world_models` covers more patterns), and the true
permutation symmetry of each written by hand: the benchmark runs on the spec
`unf_lopt.infer_spec` proves, and a test checks it is this one, with

* spatial filter taps ``FIXED``;
* data inputs and outputs ``FIXED`` (pixels, RGB channels, classes, tokens);
* the flattened axis after a conv stack ``FIXED``;
* the position axis of a learned position embedding ``FIXED``;
* BatchNorm's scale and bias on the channel name of the conv they follow.

Each model is ``(apply_fn, params, example_args)``, the gallery's convention,
and `HAND_SPECS` maps its name to a function of the params giving the spec.

Example:
  >>> import jax, unf_lopt as U
  >>> apply_fn, params, args = MODELS["flatten_cnn"]()
  >>> sorted(U.validate_spec(HAND_SPECS["flatten_cnn"](params), params).items())
  [('c1', 32), ('hidden', 256)]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

FIXED = None
Model = tuple[Callable[..., Any], Any, tuple]


class FlattenCNN(nn.Module):
  """The Keras/flax MNIST example CNN: two 3x3 convs, 2x2 pools, flatten, 256, 10."""

  @nn.compact
  def __call__(self, x):
    x = nn.max_pool(nn.relu(nn.Conv(32, (3, 3))(x)), (2, 2), (2, 2))
    x = nn.max_pool(nn.relu(nn.Conv(64, (3, 3))(x)), (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)  # 7 * 7 * 64 = 3136 features, in a fixed order
    x = nn.relu(nn.Dense(256)(x))
    return nn.Dense(10)(x)


def flatten_cnn_spec(params):
  return {"Conv_0": {"kernel": (FIXED, FIXED, FIXED, "c1"), "bias": ("c1",)},
          # Flattening orders the 3136 features by (row, column, channel): permuting the
          # second conv's channels would reorder the dense layer's inputs, so they are fixed.
          "Conv_1": {"kernel": (FIXED, FIXED, "c1", FIXED), "bias": (FIXED,)},
          "Dense_0": {"kernel": (FIXED, "hidden"), "bias": ("hidden",)},
          "Dense_1": {"kernel": ("hidden", FIXED), "bias": (FIXED,)}}


class Block(nn.Module):
  """Pre-activation-free basic block: conv-BN-relu-conv-BN, projection when the width changes."""

  width: int
  stride: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    norm = lambda: nn.BatchNorm(use_running_average=not train)  # noqa: E731
    y = nn.relu(norm()(nn.Conv(self.width, (3, 3), self.stride, use_bias=False)(x)))
    y = norm()(nn.Conv(self.width, (3, 3), use_bias=False)(y))
    if x.shape[-1] != self.width or self.stride != 1:
      x = norm()(nn.Conv(self.width, (1, 1), self.stride, use_bias=False)(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  """A CIFAR ResNet: stem, stages of basic blocks with BatchNorm, global mean pool, dense."""

  widths: tuple[int, ...] = (16, 32, 64)
  blocks: int = 2

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(
        nn.Conv(self.widths[0], (3, 3), use_bias=False)(x)))
    for stage, width in enumerate(self.widths):
      for block in range(self.blocks):
        x = Block(width, 2 if stage and not block else 1)(x, train)
    return nn.Dense(10)(x.mean(axis=(1, 2)))


def resnet_spec(params):
  """Stage ``s`` has a residual-stream name ``stream{s}``; each block's hidden width its own."""
  bn = lambda name: {"scale": (name,), "bias": (name,)}  # noqa: E731
  spec = {"Conv_0": {"kernel": (FIXED, FIXED, FIXED, "stream0")}, "BatchNorm_0": bn("stream0")}
  blocks = sorted((k for k in params if k.startswith("Block_")), key=lambda k: int(k[6:]))
  stream = "stream0"
  stage = 0
  for name in blocks:
    block = params[name]
    projects = "Conv_2" in block
    if projects:
      stage += 1
    out = f"stream{stage}"
    hidden = f"{name}.hidden"
    spec[name] = {"Conv_0": {"kernel": (FIXED, FIXED, stream, hidden)}, "BatchNorm_0": bn(hidden),
                  "Conv_1": {"kernel": (FIXED, FIXED, hidden, out)}, "BatchNorm_1": bn(out)}
    if projects:
      spec[name]["Conv_2"] = {"kernel": (FIXED, FIXED, stream, out)}
      spec[name]["BatchNorm_2"] = bn(out)
    stream = out
  spec["Dense_0"] = {"kernel": (stream, FIXED), "bias": (FIXED,)}
  return spec


class TransformerLM(nn.Module):
  """A GPT-style language model: token and learned position embeddings, pre-LN blocks."""

  vocab: int = 4096
  length: int = 128
  width: int = 128
  heads: int = 4
  depth: int = 2

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(self.vocab, self.width)(tokens)
    x = x + self.param("position_embedding", nn.initializers.normal(0.02),
                       (self.length, self.width))[:tokens.shape[1]]
    mask = nn.make_causal_mask(tokens)
    for _ in range(self.depth):
      x = x + nn.MultiHeadDotProductAttention(self.heads)(nn.LayerNorm()(x), mask=mask)
      y = nn.Dense(4 * self.width)(nn.LayerNorm()(x))
      x = x + nn.Dense(self.width)(nn.gelu(y))
    return nn.Dense(self.vocab)(nn.LayerNorm()(x))


def transformer_spec(params):
  """The residual stream is ``d``; heads, query/key and value head dimensions per block."""
  norm = {"scale": ("d",), "bias": ("d",)}
  spec = {"Embed_0": {"embedding": (FIXED, "d")}, "position_embedding": (FIXED, "d")}
  depth = sum(k.startswith("MultiHeadDotProductAttention_") for k in params)
  for i in range(depth):
    heads, qk, v, hidden = f"heads{i}", f"qk{i}", f"v{i}", f"mlp{i}"
    spec[f"MultiHeadDotProductAttention_{i}"] = {
        "query": {"kernel": ("d", heads, qk), "bias": (heads, qk)},
        "key": {"kernel": ("d", heads, qk), "bias": (heads, qk)},
        "value": {"kernel": ("d", heads, v), "bias": (heads, v)},
        "out": {"kernel": (heads, v, "d"), "bias": ("d",)}}
    spec[f"LayerNorm_{2 * i}"] = norm
    spec[f"LayerNorm_{2 * i + 1}"] = norm
    spec[f"Dense_{2 * i}"] = {"kernel": ("d", hidden), "bias": (hidden,)}
    spec[f"Dense_{2 * i + 1}"] = {"kernel": (hidden, "d"), "bias": ("d",)}
  spec[f"LayerNorm_{2 * depth}"] = norm
  spec[f"Dense_{2 * depth}"] = {"kernel": ("d", FIXED), "bias": (FIXED,)}
  return spec


def flatten_cnn() -> Model:
  model, x = FlattenCNN(), jnp.zeros((1, 28, 28, 1))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x)["params"]
  return (lambda p, x: model.apply({"params": p}, x)), params, (x,)


def resnet() -> Model:
  model, x = ResNet(), jnp.zeros((1, 32, 32, 3))
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  stats = variables["batch_stats"]
  return (lambda p, x: model.apply({"params": p, "batch_stats": stats}, x)), \
      variables["params"], (x,)


def transformer() -> Model:
  model, tokens = TransformerLM(), jnp.zeros((1, 128), jnp.int32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens)["params"]
  return (lambda p, t: model.apply({"params": p}, t)), params, (tokens,)


MODELS: dict[str, Callable[[], Model]] = {
    "flatten_cnn": flatten_cnn, "resnet": resnet, "transformer": transformer}
HAND_SPECS = {"flatten_cnn": flatten_cnn_spec, "resnet": resnet_spec,
              "transformer": transformer_spec}
