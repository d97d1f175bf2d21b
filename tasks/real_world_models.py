"""A gallery of small flax.linen models written the way people write them.

Each entry of :data:`MODELS` builds a :class:`RealWorldModel`: ``apply_fn``,
the variables it reads as its first argument (the ``params`` collection, or the
whole variables dict where the model has other collections such as BatchNorm's
``batch_stats``), and example inputs, so that ``apply_fn(variables, *example_args)``
runs the model. The models cover the patterns that trip a spec guessed from
parameter names and shapes: branches, projection shortcuts, an encoder state
handed to a decoder, fixed and learned position encodings, a class token,
GroupNorm, token mixing, equal input and output sizes, dicts out of call order,
a flatten before a dense head, bidirectional LSTMs, boxed (partitioned) params.
They are tiny, so tests over all of them stay fast, but no hidden layer has
size 1 and widths differ (with a few equal on purpose, to confuse shape guesses).

Example:
  >>> from unf_lopt.tasks.real_world_models import MODELS
  >>> model = MODELS["sequential_mlp"]()
  >>> model.apply_fn(model.variables, *model.example_args).shape
  (3, 10)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class RealWorldModel(NamedTuple):
  """A model ready to run: ``apply_fn(variables, *example_args)``."""

  apply_fn: Callable[..., Any]
  variables: Any
  example_args: tuple


def _key(seed: int) -> jax.Array:
  return jax.random.PRNGKey(seed)


def _normal(seed: int, shape, dtype=jnp.float32) -> jax.Array:
  return jax.random.normal(_key(seed + 1000), shape, dtype)


def _tokens(seed: int, shape, vocab: int) -> jax.Array:
  return jax.random.randint(_key(seed + 2000), shape, 0, vocab)


def _params_model(module: nn.Module, example_args: tuple, seed: int, **apply_kwargs
                  ) -> RealWorldModel:
  """A model whose only collection is ``params``; ``apply_fn`` reads the params dict."""
  # One compiled init instead of many small eager ops: much faster on a busy CPU.
  params = jax.jit(lambda key, *args: module.init(key, *args, **apply_kwargs))(
      _key(seed), *example_args)["params"]

  def apply_fn(params, *args):
    return module.apply({"params": params}, *args, **apply_kwargs)

  return RealWorldModel(apply_fn, params, example_args)


# ---------------------------------------------------------------------------
# Multilayer perceptrons.


class TwoHeadClassifier(nn.Module):
  """A branch: a digit head and a parity head read one hidden layer."""

  @nn.compact
  def __call__(self, x):
    hidden = nn.relu(nn.Dense(48, name="trunk")(x))
    hidden = nn.relu(nn.Dense(40, name="trunk_2")(hidden))
    return nn.Dense(10, name="digit_head")(hidden), nn.Dense(2, name="parity_head")(hidden)


def two_head_classifier() -> RealWorldModel:
  return _params_model(TwoHeadClassifier(), (_normal(0, (4, 20)),), seed=0)


def sequential_mlp() -> RealWorldModel:
  """The README's ``nn.Sequential`` MLP; two hidden layers of equal width."""
  module = nn.Sequential([nn.Dense(32), nn.relu, nn.Dense(32), nn.relu, nn.Dense(10)])
  return _params_model(module, (_normal(1, (3, 24)),), seed=1)


class DenoisingAutoencoder(nn.Module):
  """Input size == output size (the io-tying trap for shape guesses)."""

  @nn.compact
  def __call__(self, x):
    h = nn.gelu(nn.Dense(28, name="encode")(x))
    h = nn.gelu(nn.Dense(12, name="bottleneck")(h))
    return nn.Dense(x.shape[-1], name="decode")(h)


def denoising_autoencoder() -> RealWorldModel:
  return _params_model(DenoisingAutoencoder(), (_normal(2, (5, 16)),), seed=2)


class OutOfOrderMLP(nn.Module):
  """Submodules declared in one order and called in another."""

  def setup(self):
    self.readout = nn.Dense(6)
    self.middle = nn.Dense(18)
    self.embed_in = nn.Dense(22)

  def __call__(self, x):
    return self.readout(nn.tanh(self.middle(nn.tanh(self.embed_in(x)))))


def out_of_order_mlp() -> RealWorldModel:
  """Its params dict is sorted by name, as a restored checkpoint gives it."""
  model = _params_model(OutOfOrderMLP(), (_normal(3, (4, 14)),), seed=3)
  params = {name: model.variables[name] for name in sorted(model.variables)}
  return model._replace(variables=params)


class ActorCritic(nn.Module):
  """Separate actor and critic torsos of equal widths (they must not be tied)."""

  num_actions: int = 5

  @nn.compact
  def __call__(self, observation):
    actor = nn.tanh(nn.Dense(64, name="actor_fc1")(observation))
    actor = nn.tanh(nn.Dense(64, name="actor_fc2")(actor))
    logits = nn.Dense(self.num_actions, name="actor_out")(actor)
    critic = nn.tanh(nn.Dense(64, name="critic_fc1")(observation))
    critic = nn.tanh(nn.Dense(64, name="critic_fc2")(critic))
    value = nn.Dense(1, name="critic_out")(critic)
    return logits, jnp.squeeze(value, -1)


def actor_critic() -> RealWorldModel:
  return _params_model(ActorCritic(), (_normal(4, (6, 11)),), seed=4)


class VAE(nn.Module):
  """Encoder to mean and log-variance, reparameterised sample, decoder."""

  latents: int = 8

  @nn.compact
  def __call__(self, x, noise):
    h = nn.relu(nn.Dense(40, name="enc_fc")(x))
    mean = nn.Dense(self.latents, name="enc_mean")(h)
    logvar = nn.Dense(self.latents, name="enc_logvar")(h)
    z = mean + jnp.exp(0.5 * logvar) * noise
    h = nn.relu(nn.Dense(40, name="dec_fc")(z))
    return nn.sigmoid(nn.Dense(x.shape[-1], name="dec_out")(h)), mean, logvar


def vae() -> RealWorldModel:
  """The noise is an input: a function of fixed noise, the latent axis is not permutable."""
  return _params_model(VAE(), (_normal(5, (4, 36)), _normal(6, (4, 8))), seed=5)


class PartitionedMLP(nn.Module):
  """Params boxed by ``nn.with_logical_partitioning`` (``nn.Partitioned`` leaves)."""

  @nn.compact
  def __call__(self, x):
    init = nn.initializers.lecun_normal()
    h = nn.Dense(26, kernel_init=nn.with_logical_partitioning(init, ("embed", "mlp")),
                 bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)))(x)
    h = nn.relu(h)
    return nn.Dense(7, kernel_init=nn.with_logical_partitioning(init, ("mlp", "vocab")))(h)


def partitioned_mlp() -> RealWorldModel:
  return _params_model(PartitionedMLP(), (_normal(7, (3, 13)),), seed=7)


# ---------------------------------------------------------------------------
# Convolutional networks.


class FlattenCNN(nn.Module):
  """The MNIST-example CNN: conv, pool, conv, flatten, dense head."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(12, (3, 3))(x))
    x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = nn.relu(nn.Conv(20, (3, 3), strides=(2, 2))(x))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(32)(x))
    return nn.log_softmax(nn.Dense(10)(x))


def flatten_cnn() -> RealWorldModel:
  return _params_model(FlattenCNN(), (_normal(8, (2, 12, 12, 1)),), seed=8)


class ResidualBlock(nn.Module):
  """A ResNet basic block; a strided 1x1 projection when the shape changes."""

  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)
    residual = x
    y = nn.Conv(self.features, (3, 3), (self.strides, self.strides), use_bias=False)(x)
    y = nn.relu(norm()(y))
    y = nn.Conv(self.features, (3, 3), use_bias=False)(y)
    y = norm()(y)
    if residual.shape != y.shape:
      residual = nn.Conv(self.features, (1, 1), (self.strides, self.strides), use_bias=False,
                         name="proj_conv")(residual)
      residual = norm()(residual)
    return nn.relu(residual + y)


class SmallResNet(nn.Module):
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(8, (3, 3), use_bias=False, name="stem")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, name="stem_bn")(x))
    x = ResidualBlock(8)(x, train)
    x = ResidualBlock(12, strides=2)(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name="head")(x)


def resnet_projection() -> RealWorldModel:
  """Variables include ``batch_stats``: the whole dict is the first argument."""
  module = SmallResNet()
  x = _normal(9, (2, 10, 10, 3))

  @jax.jit
  def init(key, x):
    variables = module.init(key, x, train=False)
    # Non-trivial running statistics and affine parameters, as after training.
    leaves, treedef = jax.tree_util.tree_flatten(variables)
    keys = jax.random.split(_key(10), len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [
        leaf + 0.1 * jnp.abs(jax.random.normal(k, leaf.shape)) for k, leaf in zip(keys, leaves)])

  variables = init(_key(9), x)

  def apply_fn(variables, x):
    return module.apply(variables, x, train=False)

  return RealWorldModel(apply_fn, variables, (x,))


class GroupNormCNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.swish(nn.GroupNorm(num_groups=4)(nn.Conv(16, (3, 3))(x)))
    x = nn.swish(nn.GroupNorm(num_groups=2)(nn.Conv(8, (5, 5), strides=(2, 2))(x)))
    x = jnp.max(x, axis=(1, 2))
    return nn.Dense(5)(x)


def groupnorm_cnn() -> RealWorldModel:
  return _params_model(GroupNormCNN(), (_normal(11, (2, 9, 9, 3)),), seed=11)


# ---------------------------------------------------------------------------
# Recurrent networks.


class Seq2SeqLSTM(nn.Module):
  """The encoder's final (c, h) is the decoder's initial carry."""

  vocab: int = 13
  hidden: int = 18

  @nn.compact
  def __call__(self, source, target):
    embed = nn.Embed(self.vocab, 10, name="shared_embed")
    carry, _ = nn.RNN(nn.LSTMCell(self.hidden), return_carry=True, name="encoder")(embed(source))
    outputs = nn.RNN(nn.LSTMCell(self.hidden), name="decoder")(embed(target),
                                                              initial_carry=carry)
    return nn.Dense(self.vocab, name="logits")(outputs)


def seq2seq_lstm() -> RealWorldModel:
  args = (_tokens(12, (2, 6), 13), _tokens(13, (2, 5), 13))
  return _params_model(Seq2SeqLSTM(), args, seed=12)


class BiLSTMTagger(nn.Module):
  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(17, 12)(tokens)
    x = nn.Bidirectional(nn.RNN(nn.LSTMCell(14)), nn.RNN(nn.LSTMCell(14)))(x)
    return nn.Dense(6)(x)


def bilstm_tagger() -> RealWorldModel:
  return _params_model(BiLSTMTagger(), (_tokens(14, (2, 7), 17),), seed=14)


class GRUClassifier(nn.Module):
  """``nn.RNN`` (a scan) over a GRU; the last step feeds the head."""

  @nn.compact
  def __call__(self, x):
    x = nn.RNN(nn.GRUCell(15))(nn.Dense(9, name="input_proj")(x))
    return nn.Dense(4, name="head")(x[:, -1])


def gru_classifier() -> RealWorldModel:
  return _params_model(GRUClassifier(), (_normal(15, (3, 6, 5)),), seed=15)


# ---------------------------------------------------------------------------
# Transformers and mixers.


def sinusoidal_positions(length: int, width: int) -> np.ndarray:
  """The fixed sine/cosine position table of "Attention is all you need"."""
  position = np.arange(length)[:, None]
  rate = np.exp(-np.log(10000.0) * np.arange(0, width, 2) / width)
  table = np.zeros((length, width), np.float32)
  table[:, 0::2] = np.sin(position * rate)
  table[:, 1::2] = np.cos(position * rate)
  return table


class EncoderBlock(nn.Module):
  heads: int
  mlp_width: int

  @nn.compact
  def __call__(self, x, mask=None):
    y = nn.LayerNorm()(x)
    x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads)(y, y, mask=mask)
    y = nn.Dense(self.mlp_width)(nn.LayerNorm()(x))
    return x + nn.Dense(x.shape[-1])(nn.gelu(y))


class SinusoidalLM(nn.Module):
  """A causal language model; a fixed position table is added to the stream."""

  vocab: int = 23
  width: int = 16

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(self.vocab, self.width)(tokens)
    x = x + sinusoidal_positions(tokens.shape[1], self.width)[None]
    mask = nn.make_causal_mask(tokens)
    x = EncoderBlock(heads=2, mlp_width=24)(x, mask)
    x = EncoderBlock(heads=2, mlp_width=24)(x, mask)
    return nn.Dense(self.vocab)(nn.LayerNorm()(x))


def sinusoidal_lm() -> RealWorldModel:
  return _params_model(SinusoidalLM(), (_tokens(16, (2, 7), 23),), seed=16)


class TinyViT(nn.Module):
  """Patches by a strided conv, a class token and learned position embeddings."""

  width: int = 12
  patch: int = 4

  @nn.compact
  def __call__(self, images):
    x = nn.Conv(self.width, (self.patch, self.patch), strides=(self.patch, self.patch),
                padding="VALID", name="patch_embed")(images)
    batch, height, width, channels = x.shape
    x = x.reshape((batch, height * width, channels))
    cls = self.param("cls", nn.initializers.normal(0.02), (1, 1, channels))
    x = jnp.concatenate([jnp.tile(cls, (batch, 1, 1)), x], axis=1)
    positions = self.param("pos_embedding", nn.initializers.normal(0.02), (1, x.shape[1],
                                                                           channels))
    x = x + positions
    x = EncoderBlock(heads=3, mlp_width=20)(x)
    x = nn.LayerNorm(name="encoder_norm")(x)
    return nn.Dense(7, name="head")(x[:, 0])


def tiny_vit() -> RealWorldModel:
  return _params_model(TinyViT(), (_normal(17, (2, 8, 12, 3)),), seed=17)


class MixerBlock(nn.Module):
  tokens_mlp: int
  channels_mlp: int

  @nn.compact
  def __call__(self, x):
    y = nn.LayerNorm()(x)
    y = jnp.swapaxes(y, 1, 2)
    y = nn.Dense(self.tokens_mlp, name="token_mixing_1")(y)
    y = nn.Dense(x.shape[1], name="token_mixing_2")(nn.gelu(y))
    x = x + jnp.swapaxes(y, 1, 2)
    y = nn.LayerNorm()(x)
    y = nn.Dense(self.channels_mlp, name="channel_mixing_1")(y)
    return x + nn.Dense(x.shape[2], name="channel_mixing_2")(nn.gelu(y))


class MLPMixer(nn.Module):
  @nn.compact
  def __call__(self, images):
    x = nn.Conv(10, (3, 3), strides=(3, 3), name="stem")(images)
    x = x.reshape((x.shape[0], -1, x.shape[-1]))
    x = MixerBlock(tokens_mlp=8, channels_mlp=14)(x)
    x = MixerBlock(tokens_mlp=8, channels_mlp=14)(x)
    x = nn.LayerNorm(name="pre_head_norm")(x)
    return nn.Dense(4, name="head")(jnp.mean(x, axis=1))


def mlp_mixer() -> RealWorldModel:
  return _params_model(MLPMixer(), (_normal(18, (2, 9, 6, 3)),), seed=18)


class DecoderBlock(nn.Module):
  heads: int
  mlp_width: int

  @nn.compact
  def __call__(self, x, memory, mask):
    y = nn.LayerNorm()(x)
    x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, name="self_attn")(y, y,
                                                                                   mask=mask)
    y = nn.LayerNorm()(x)
    x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, name="cross_attn")(y, memory)
    y = nn.Dense(self.mlp_width)(nn.LayerNorm()(x))
    return x + nn.Dense(x.shape[-1])(nn.relu(y))


class TranslationTransformer(nn.Module):
  """Encoder-decoder with separate source and target embeddings."""

  source_vocab: int = 19
  target_vocab: int = 21
  width: int = 12

  @nn.compact
  def __call__(self, source, target):
    memory = nn.Embed(self.source_vocab, self.width, name="source_embed")(source)
    memory = EncoderBlock(heads=2, mlp_width=20, name="encoder")(memory)
    memory = nn.LayerNorm(name="encoder_norm")(memory)
    x = nn.Embed(self.target_vocab, self.width, name="target_embed")(target)
    x = DecoderBlock(heads=2, mlp_width=20, name="decoder")(x, memory,
                                                           nn.make_causal_mask(target))
    return nn.Dense(self.target_vocab, name="logits")(nn.LayerNorm(name="decoder_norm")(x))


def translation_transformer() -> RealWorldModel:
  args = (_tokens(19, (2, 6), 19), _tokens(20, (2, 5), 21))
  return _params_model(TranslationTransformer(), args, seed=19)


MODELS: dict[str, Callable[[], RealWorldModel]] = {
    "two_head_classifier": two_head_classifier,
    "sequential_mlp": sequential_mlp,
    "denoising_autoencoder": denoising_autoencoder,
    "out_of_order_mlp": out_of_order_mlp,
    "actor_critic": actor_critic,
    "vae": vae,
    "partitioned_mlp": partitioned_mlp,
    "flatten_cnn": flatten_cnn,
    "resnet_projection": resnet_projection,
    "groupnorm_cnn": groupnorm_cnn,
    "seq2seq_lstm": seq2seq_lstm,
    "bilstm_tagger": bilstm_tagger,
    "gru_classifier": gru_classifier,
    "sinusoidal_lm": sinusoidal_lm,
    "tiny_vit": tiny_vit,
    "mlp_mixer": mlp_mixer,
    "translation_transformer": translation_transformer,
}
"""Every gallery model by name; each builder returns a :class:`RealWorldModel`."""
