"""The fused trunk (time channels in the first bias, blocked chain) equals the plain net."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import unf_lopt as U
from tests import weight_spaces as ws
from unf_lopt import features as features_lib
from unf_lopt.layers import pointwise_mlp
from unf_lopt.layers.pointwise_mlp import pointwise_mlp_columns
from unf_lopt.update_nets import UpdateNet


def random_layers(key, widths):
  keys = jax.random.split(key, 2 * len(widths))
  return [(jax.random.normal(keys[2 * i], (a, b)) / np.sqrt(a),
           jax.random.normal(keys[2 * i + 1], (b,)))
          for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))]


def dense_reference(rows, layers, activate_output):
  x = np.asarray(rows, np.float64)
  for index, (kernel, bias) in enumerate(layers):
    x = x @ np.asarray(kernel, np.float64) + np.asarray(bias, np.float64)
    if activate_output or index < len(layers) - 1:
      x = np.maximum(x, 0.0)
  return x


@pytest.mark.parametrize("count", [7, 64, 65, 130, 257])
@pytest.mark.parametrize("activate_output", [False, True])
def test_blocked_chain_equals_a_float64_dense_chain(count, activate_output):
  # 16-row blocks: 7 and 64 rows run at once, the others in blocks whose last
  # one is moved back to end at the last row.
  layers = random_layers(jax.random.PRNGKey(count), (5, 8, 8, 3))
  rows = jax.random.normal(jax.random.PRNGKey(1), (count, 5))
  got = pointwise_mlp(rows, layers, activate_output=activate_output, block_rows=16)
  np.testing.assert_allclose(got, dense_reference(rows, layers, activate_output),
                             rtol=1e-5, atol=1e-5)
  columns = pointwise_mlp_columns(rows.T, layers, activate_output=activate_output)
  np.testing.assert_allclose(columns.T, got, rtol=1e-5, atol=1e-5)


def test_blocked_chain_under_vmap_and_its_gradient_match_the_unblocked_one():
  layers = random_layers(jax.random.PRNGKey(0), (4, 6, 2))
  rows = jax.random.normal(jax.random.PRNGKey(1), (3, 100, 4))  # 3 particles

  def loss(layers, block_rows):
    out = jax.vmap(lambda r: pointwise_mlp(r, layers, block_rows=block_rows))(rows)
    return jnp.sum(jnp.sin(out))

  blocked, blocked_grad = jax.value_and_grad(loss)(layers, 8)
  plain, plain_grad = jax.value_and_grad(loss)(layers, None)
  np.testing.assert_allclose(blocked, plain, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(blocked_grad), jax.tree.leaves(plain_grad)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def features_of(params, seed=0):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), 2 * len(leaves))
  weights = treedef.unflatten([jax.random.normal(k, np.shape(p))
                               for k, p in zip(keys[::2], leaves)])
  grads = treedef.unflatten([jax.random.normal(k, np.shape(p))
                             for k, p in zip(keys[1::2], leaves)])
  momenta = features_lib.update_momenta(features_lib.init_momenta(weights), grads)
  momenta = features_lib.update_momenta(momenta, jax.tree.map(lambda g: -0.5 * g, grads))
  return weights, grads, momenta


SPACES = {"mlp": ws.mlp, "cnn": ws.cnn, "rnn": ws.rnn,
          "transformer": lambda: ws.transformer(blocks=1)}


HEADS = [("unf", {}), ("unf", {"max_folded_size": 1}), ("unf", {"tensor_pairs": "linked"}),
         ("deepset", {}), ("nfn", {})]
# NFN layers exist for MLP and CNN weight spaces only.
CASES = [(space, head, options) for space in sorted(SPACES) for head, options in HEADS
         if head != "nfn" or space in ("mlp", "cnn")]


@pytest.mark.parametrize("space,head,options", CASES)
@pytest.mark.parametrize("block_rows", [None, 4])
def test_fused_update_net_equals_the_plain_one_on_the_full_features(space, head, options,
                                                                    block_rows):
  params, spec = SPACES[space]()
  if head == "deepset":
    spec = jax.tree.map(lambda p: (None,) * np.ndim(p), params)
  weights, grads, momenta = features_of(params)
  step = jnp.asarray(37)
  net = UpdateNet(head, block_rows=block_rows, **options)
  full = features_lib.build_features(weights, grads, momenta, step)
  variables = net.init(jax.random.PRNGKey(0), full, spec)
  fused_variables = net.init(jax.random.PRNGKey(0),
                             features_lib.entry_features(weights, grads, momenta), spec,
                             features_lib.time_embedding(step))
  # Same parameter names, shapes and initial values: checkpoints carry over.
  assert jax.tree.structure(variables) == jax.tree.structure(fused_variables)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(fused_variables)):
    np.testing.assert_array_equal(a, b)
  plain = net.apply(variables, full, spec)
  fused = net.apply(variables, features_lib.entry_features(weights, grads, momenta), spec,
                    features_lib.time_embedding(step))
  assert jax.tree.structure(plain) == jax.tree.structure(fused)
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(fused)):
    assert a.shape == b.shape
    np.testing.assert_allclose(b, a, rtol=2e-5, atol=2e-5)


def test_optimizer_step_equals_the_step_computed_from_the_19_channel_features():
  params, spec = ws.cnn()
  weights, grads, _ = features_of(params, seed=3)
  lopt = U.NominalLOpt("unf", spec=spec, params_like=weights)
  meta = lopt.init(jax.random.PRNGKey(0))
  meta["log_beta"] = jnp.asarray(0.0)  # make the learned term dominate the step
  opt = lopt.opt_fn(meta)
  state = opt.init(weights, num_steps=100)
  state = opt.update(state, grads)
  new = opt.update(state, grads)

  # The same step from the plain 19-channel features.
  momenta = features_lib.update_momenta(state.momenta, grads)
  full = features_lib.build_features(state.params, grads, momenta, state.step)
  learned = lopt.network().apply(meta["update_net"], full, spec)
  alpha, g0 = jnp.exp(meta["log_alpha"]), jax.nn.sigmoid(meta["logit_g0"])
  expected = jax.tree.map(
      lambda w, m, g, f: w - alpha * (g0 * m + g + jnp.exp(meta["log_beta"]) * f),
      state.params, state.nominal_momentum, grads, learned)
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_zero_depth_net_takes_the_shared_channels_too():
  params, spec = ws.mlp()
  weights, grads, momenta = features_of(params)
  net = UpdateNet("unf", depth=0)
  full = features_lib.build_features(weights, grads, momenta, 5)
  variables = net.init(jax.random.PRNGKey(0), full, spec)
  fused = net.apply(variables, features_lib.entry_features(weights, grads, momenta), spec,
                    features_lib.time_embedding(5))
  for a, b in zip(jax.tree.leaves(net.apply(variables, full, spec)), jax.tree.leaves(fused)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
