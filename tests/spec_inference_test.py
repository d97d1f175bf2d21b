"""Tests for infer_spec: inferred specs validate and are true symmetries of real flax models."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import unf_lopt as U
from unf_lopt.permutations import permute, sample_permutations


class CNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3), strides=2)(x))
    x = nn.relu(nn.Conv(6, (3, 3))(x))
    return nn.Dense(3)(x.mean(axis=(1, 2)))


class RNNLM(nn.Module):
  cell: str = "simple"

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(7, 5)(tokens)
    cell = {"simple": nn.SimpleCell, "gru": nn.GRUCell, "lstm": nn.LSTMCell}[self.cell](6)
    x = nn.RNN(cell)(x)
    return nn.Dense(7)(x)


class Block(nn.Module):
  @nn.compact
  def __call__(self, x):
    mask = nn.make_causal_mask(jnp.ones(x.shape[:2]))
    attention = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=6)
    x = x + attention(nn.LayerNorm()(x), mask=mask)
    h = nn.Dense(10)(nn.LayerNorm()(x))
    return x + nn.Dense(4)(nn.gelu(h))


class Transformer(nn.Module):
  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(9, 4)(tokens)
    x = Block()(Block()(x))
    return nn.Dense(9)(nn.LayerNorm()(x))


MODELS = {
    "mlp": (nn.Sequential([nn.Dense(6), nn.relu, nn.Dense(5), nn.relu, nn.Dense(3)]),
            jnp.ones((2, 4))),
    "cnn": (CNN(), jnp.ones((2, 8, 8, 3))),
    "rnn": (RNNLM("simple"), jnp.ones((2, 5), jnp.int32)),
    "gru": (RNNLM("gru"), jnp.ones((2, 5), jnp.int32)),
    "lstm": (RNNLM("lstm"), jnp.ones((2, 5), jnp.int32)),
    "transformer": (Transformer(), jnp.ones((2, 5), jnp.int32)),
}


def shapes(model, x):
  """The model's parameters as shapes: `infer_spec` reads nothing else."""
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), x)["params"]


def perturbed(params, seed=0):
  """``params`` plus noise, so no symmetry holds by accident (numpy: eager jax.random
  compiles once per shape)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: p + np.float32(0.3) * rng.normal(size=p.shape).astype(p.dtype),
                      params)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_inferred_spec_is_a_true_symmetry(name):
  model, x = MODELS[name]
  if x.dtype == jnp.int32:
    x = jnp.arange(10).reshape(2, 5) % 7
  # Jitted: eager flax runs compile every operation separately.
  params = perturbed(jax.jit(model.init)(jax.random.PRNGKey(0), x)["params"])
  apply = jax.jit(model.apply)
  spec = U.infer_spec(params, fixed_io=True)
  names = U.validate_spec(spec, params)
  assert names, "some axis must be permutable"
  reference = apply({"params": params}, x)
  rng = np.random.default_rng(0)
  for _ in range(2):
    perms = sample_permutations(rng, spec, params)
    moved = permute(params, spec, perms)
    assert not all(np.allclose(a, b)
                   for a, b in zip(jax.tree.leaves(moved), jax.tree.leaves(params)))
    np.testing.assert_allclose(apply({"params": moved}, x), reference, atol=1e-4)


def test_mlp_inference_matches_the_builder_up_to_names():
  params = shapes(*MODELS["mlp"])
  inferred = jax.tree.leaves(U.infer_spec(params), is_leaf=lambda n: isinstance(n, tuple))
  built = jax.tree.leaves(U.mlp_spec(params), is_leaf=lambda n: isinstance(n, tuple))
  renaming = {}
  for a, b in zip(inferred, built):
    for x, y in zip(a, b):
      assert renaming.setdefault(x, y) == y
  assert len(set(renaming.values())) == len(renaming)


def test_residual_stream_shares_one_name():
  model, _ = MODELS["transformer"]
  params = shapes(model, jnp.zeros((1, 3), jnp.int32))
  spec = U.infer_spec(params)
  stream = spec["Embed_0"]["embedding"][1]
  assert spec["Block_0"]["Dense_1"]["kernel"][1] == stream
  assert spec["Block_1"]["MultiHeadDotProductAttention_0"]["out"]["kernel"][2] == stream
  assert spec["LayerNorm_0"]["scale"] == (stream,)
  attention = spec["Block_0"]["MultiHeadDotProductAttention_0"]
  assert attention["query"]["kernel"][1:] == attention["key"]["kernel"][1:]
  # tie_vocab: the head's output axis is the embedding's vocabulary axis
  assert spec["Dense_0"]["kernel"][1] == spec["Embed_0"]["embedding"][0]


def test_conv_spatial_options():
  model, x = MODELS["cnn"]
  params = shapes(model, x)
  assert U.infer_spec(params)["Conv_0"]["kernel"][:2] == (None, None)
  assert None not in U.infer_spec(params, conv_spatial="permute")["Conv_0"]["kernel"]


def test_unknown_leaf_is_an_error_unless_overridden():
  model, x = MODELS["rnn"]
  params = dict(shapes(model, x))
  params["initial_state"] = jnp.zeros((1, 6))
  with pytest.raises(U.SpecError, match="initial_state"):
    U.infer_spec(params)
  spec = U.infer_spec(params, overrides={"initial_state": (None, "SimpleCell_0.out")})
  assert spec["initial_state"] == (None, spec["SimpleCell_0"]["h"]["kernel"][0])


def test_broken_chain_is_an_error_naming_the_module():
  params = {"Dense_0": {"kernel": jnp.zeros((4, 8)), "bias": jnp.zeros(8)},
            "Dense_1": {"kernel": jnp.zeros((16, 3)), "bias": jnp.zeros(3)}}  # a flatten in between
  with pytest.raises(U.SpecError, match="Dense_1.*size 16.*Dense_0"):
    U.infer_spec(params)
