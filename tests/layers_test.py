"""Tests for unf_lopt.layers: equivariance, reference agreement, counts, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import reference
import unf_lopt as U
import weight_spaces
from unf_lopt import basis
from unf_lopt.layers import engine
from unf_lopt.permutations import permute, sample_permutations
from unf_lopt.spec import tensor_infos


def random_features(params, channels, seed=0, dtype=jnp.float32):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(treedef, [
      jax.random.normal(k, (*np.shape(leaf), channels), dtype) for k, leaf in zip(keys, leaves)])


def max_difference(a, b):
  return max(float(jnp.max(jnp.abs(jnp.asarray(u, jnp.float32) - jnp.asarray(v, jnp.float32))))
             for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def count_params(variables):
  return sum(np.size(leaf) for leaf in jax.tree.leaves(variables))


def init_and_apply(layer, features, spec, seed=0):
  """The layer's variables and its jitted forward pass (an eager init compiles every op)."""
  variables = jax.jit(lambda key, x: layer.init(key, x, spec))(jax.random.PRNGKey(seed), features)
  return variables, jax.jit(lambda x: layer.apply(variables, x, spec))


def param_count_of_init(layer, features, spec):
  """Parameter count of ``layer.init``, from shapes alone."""
  return count_params(jax.eval_shape(lambda x: layer.init(jax.random.PRNGKey(0), x, spec),
                                     features))


LAYERS = {"unf": lambda: U.UNFLinear(3), "deepset": lambda: U.DeepSetLinear(3),
          "unf_identity_share": lambda: U.UNFLinear(3, identity_share=0.8)}


@pytest.mark.parametrize("space", sorted(weight_spaces.ALL))
@pytest.mark.parametrize("layer_name", sorted(LAYERS))
def test_equivariance_under_random_permutations(space, layer_name):
  params, spec = weight_spaces.ALL[space]()
  features = random_features(params, channels=2)
  _, forward = init_and_apply(LAYERS[layer_name](), features, spec)
  rng = np.random.default_rng(1)
  for _ in range(3):
    perms = sample_permutations(rng, spec, params)
    permuted_then_layer = forward(permute(features, spec, perms, trailing_dims=1))
    layer_then_permuted = permute(forward(features), spec, perms, trailing_dims=1)
    assert max_difference(permuted_then_layer, layer_then_permuted) < 1e-5


@pytest.mark.slow
def test_unf_equivariance_keeps_the_blocks_of_a_two_block_transformer_apart():
  params, spec = weight_spaces.transformer(blocks=2)
  features = random_features(params, channels=2)
  _, forward = init_and_apply(U.UNFLinear(2), features, spec)
  perms = sample_permutations(np.random.default_rng(4), spec, params)
  permuted_then_layer = forward(permute(features, spec, perms, trailing_dims=1))
  layer_then_permuted = permute(forward(features), spec, perms, trailing_dims=1)
  assert {"mlp0", "mlp1"} <= set(perms)  # each block's hidden axis is permuted on its own
  assert max_difference(permuted_then_layer, layer_then_permuted) < 1e-5


@pytest.mark.parametrize("space", ["mlp", "cnn", "cnn_fixed"])
def test_nfn_equivariance(space):
  params, spec = weight_spaces.ALL[space]()
  features = random_features(params, channels=2)
  _, forward = init_and_apply(U.NFNLinear(3, use_bias=True), features, spec)
  # NP permutes neuron axes only: filter axes are channels of the NFN layer.
  neuron_spec = jax.tree.map(lambda axes: (*[None] * (len(axes) - 2), *axes[-2:])
                             if len(axes) > 2 else axes, spec,
                             is_leaf=lambda n: isinstance(n, tuple))
  perms = sample_permutations(np.random.default_rng(2), neuron_spec, params)
  a = forward(permute(features, neuron_spec, perms, trailing_dims=1))
  b = permute(forward(features), neuron_spec, perms, trailing_dims=1)
  assert max_difference(a, b) < 1e-5


@pytest.mark.parametrize("space", sorted(weight_spaces.ALL))
def test_invariant_pool(space):
  params, spec = weight_spaces.ALL[space]()
  features = random_features(params, channels=3)
  pooled = U.InvariantPool().apply({}, features, spec)
  assert pooled.shape[0] >= 3 * len(jax.tree.leaves(params))
  perms = sample_permutations(np.random.default_rng(3), spec, params)
  pooled_permuted = U.invariant_pool(permute(features, spec, perms, trailing_dims=1), spec)
  np.testing.assert_allclose(pooled, pooled_permuted, atol=1e-5)


def test_invariant_pool_shape_without_fixed_axes():
  params, spec = weight_spaces.mlp()
  assert U.invariant_pool(random_features(params, 3), spec).shape == (4 * 3,)


def test_fixed_axis_is_not_permuted_by_the_layer():
  """With fixed filter taps the UNF layer mixes taps freely: permuting them is no symmetry."""
  params, spec = weight_spaces.cnn(spatial=(None, None))
  features = random_features(params, channels=2)
  _, forward = init_and_apply(U.UNFLinear(2), features, spec)
  _, named_spec = weight_spaces.cnn(spatial=("h", "w"))
  swap = {"h": np.array([1, 0]), "w": np.array([1, 0])}
  a = forward(permute(features, named_spec, swap, trailing_dims=1))
  b = permute(forward(features), named_spec, swap, trailing_dims=1)
  assert max_difference(a, b) > 1e-2


@pytest.mark.parametrize("order", ["auto", "pool_first", "project_first"])
def test_unf_matches_dense_brute_force_reference(order):
  spec = {"w": ("a", "b"), "r": ("b", "b"), "b": ("b",), "t": ("a", "b", "b"), "s": (),
          "v": ("b", "a")}
  sizes = {"a": 2, "b": 3}
  params = {k: np.zeros([sizes[n] for n in axes], np.float32) for k, axes in spec.items()}
  features = random_features(params, channels=2, seed=4)
  layer = U.UNFLinear(2, order=order)
  variables, _ = init_and_apply(layer, features, spec, seed=5)
  # give the biases non-zero values so they are checked too
  variables = jax.tree_util.tree_map_with_path(
      lambda path, v: v + 0.3 if "bias" in jax.tree_util.keystr(path) else v, variables)
  output = jax.jit(lambda x: layer.apply(variables, x, spec))(features)

  infos, treedef = tensor_infos(spec, params)
  plan = basis.compile_plan(tuple(info.axes for info in infos))
  p = variables["params"]
  expected = reference.dense_unf(
      plan, [info.shape for info in infos], treedef.flatten_up_to(features),
      [p[f"kernel[{info.path}]"] for info in infos], [p[f"bias[{info.path}]"] for info in infos])
  for got, want in zip(treedef.flatten_up_to(output), expected):
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def linear_span_rank(layer, features, spec):
  """Dimension of the space of dense maps x -> layer(x) as the coefficients vary."""
  variables, _ = init_and_apply(layer, features, spec)
  flat, unravel = ravel_pytree(variables)
  flat_x, unravel_x = ravel_pytree(features)

  def dense_map(coefficients):
    return jax.jacobian(lambda x: ravel_pytree(layer.apply(unravel(coefficients), unravel_x(x),
                                                           spec))[0])(flat_x)

  maps = jax.jit(jax.vmap(dense_map))(jnp.eye(flat.size))
  return maps.reshape(flat.size, -1)


def test_unf_spans_the_same_maps_as_nfn_np_on_an_mlp():
  params, spec = weight_spaces.mlp((3, 2, 2))
  features = random_features(params, channels=1)
  unf = linear_span_rank(U.UNFLinear(1, use_bias=False), features, spec)
  nfn = linear_span_rank(U.NFNLinear(1, use_bias=False), features, spec)
  rank = np.linalg.matrix_rank
  assert rank(unf) == rank(nfn) == 32
  assert rank(np.concatenate([unf, nfn])) == 32


def test_parameter_counts_match_the_paper():
  params, spec = weight_spaces.mlp((64, 32, 10))
  features = random_features(params, channels=32)
  assert param_count_of_init(U.UNFLinear(1), features, spec) == 1028
  assert param_count_of_init(U.DeepSetLinear(32), features, spec) == 32 * 32 + 32
  cnn_params = weight_spaces.zeros_from_shapes({
      "Conv_0": {"kernel": (3, 3, 3, 16), "bias": (16,)},
      "Conv_1": {"kernel": (3, 3, 16, 32), "bias": (32,)},
      "Dense_0": {"kernel": (32, 10), "bias": (10,)}})
  cnn_spec = {"Conv_0": U.conv_spec("c0", "c1"), "Conv_1": U.conv_spec("c1", "c2"),
              "Dense_0": U.dense_spec("c2", "c3")}
  features = random_features(cnn_params, channels=32)
  # Table 3, NFN on the CNN: 41,603 = 38,848 (NFN[1]) + 2,752 (DS stack) + 3 scalars.
  assert param_count_of_init(U.NFNLinear(1), features, cnn_spec) == 38_848


def test_auto_order_projects_thin_outputs_and_agrees_with_pool_first():
  params, spec = weight_spaces.transformer(blocks=1)
  features = random_features(params, channels=8)
  auto, pool_first = U.UNFLinear(1), U.UNFLinear(1, order="pool_first")
  variables, auto_forward = init_and_apply(auto, features, spec)
  pool_first_forward = jax.jit(lambda x: pool_first.apply(variables, x, spec))
  assert max_difference(auto_forward(features), pool_first_forward(features)) < 1e-5
  with pytest.raises(ValueError, match="order"):
    U.UNFLinear(1, order="sideways").init(jax.random.PRNGKey(0), features, spec)


@pytest.mark.parametrize("order", ["pool_first", "project_first"])
def test_matrix_vector_pooling_agrees_with_native_reductions(monkeypatch, order):
  params, spec = weight_spaces.transformer(blocks=1)
  features = random_features(params, channels=3)
  layer = U.UNFLinear(2, order=order)
  variables, forward = init_and_apply(layer, features, spec)
  native = forward(features)
  monkeypatch.setattr(engine, "LONG_INNER_BLOCK", 1)  # every leading pool as a matvec
  # a fresh jit traces again, now with the patched block length
  matvec = jax.jit(lambda x: layer.apply(variables, x, spec))(features)
  assert max_difference(matvec, native) < 1e-5


@pytest.mark.parametrize("layer", [U.UNFLinear(4), U.DeepSetLinear(4)], ids=["unf", "deepset"])
def test_vmap_over_a_batch_of_weight_spaces(layer):
  params, spec = weight_spaces.rnn()
  batch = jax.tree.map(lambda a: jnp.stack([a, a + 1.0]), random_features(params, channels=2))
  variables, forward = init_and_apply(layer, jax.tree.map(lambda a: a[0], batch), spec)
  batched = jax.jit(jax.vmap(lambda x: layer.apply(variables, x, spec)))(batch)
  one = forward(jax.tree.map(lambda a: a[1], batch))
  assert max_difference(jax.tree.map(lambda a: a[1], batched), one) < 1e-5


@pytest.mark.parametrize("layer", [U.UNFLinear(2), U.DeepSetLinear(2), U.NFNLinear(2)],
                         ids=["unf", "deepset", "nfn"])
def test_bfloat16_inputs(layer):
  params, spec = weight_spaces.cnn(spatial=(None, None))
  features = random_features(params, channels=2)
  _, forward = init_and_apply(layer, features, spec)
  full = forward(features)
  half = forward(jax.tree.map(lambda a: a.astype(jnp.bfloat16), features))
  assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(half))
  scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(full))
  assert max_difference(full, half) < 0.05 * scale


def test_pointwise_activation():
  features = {"w": jnp.array([[-1.0], [2.0]])}
  np.testing.assert_array_equal(U.pointwise(jax.nn.relu)(features)["w"], [[0.0], [2.0]])


def test_nfn_rejects_weight_spaces_it_does_not_support():
  params, spec = weight_spaces.rnn()
  features = random_features(params, channels=2)
  with pytest.raises(U.SpecError, match="recurrent|neither a kernel"):
    U.NFNLinear(1).init(jax.random.PRNGKey(0), features, spec)
  params, spec = weight_spaces.transformer()
  features = random_features(params, channels=2)
  with pytest.raises(U.SpecError, match="MLP and CNN"):
    U.NFNLinear(1).init(jax.random.PRNGKey(0), features, spec)


def test_layer_rejects_features_that_do_not_match_the_spec():
  params, spec = weight_spaces.mlp()
  features = random_features(params, channels=2)
  bad = dict(spec, Dense_0={"kernel": ("n0", "n1", "n9"), "bias": ("n1",)})
  with pytest.raises(U.SpecError, match="Dense_0/kernel"):
    U.UNFLinear(1).init(jax.random.PRNGKey(0), features, bad)
  mixed = dict(features, Dense_1={"kernel": features["Dense_1"]["kernel"][..., :1],
                                  "bias": features["Dense_1"]["bias"]})
  with pytest.raises(U.SpecError, match="channel count"):
    U.UNFLinear(1).init(jax.random.PRNGKey(0), mixed, spec)


def _spread_of_a_local_change(layer, params, spec):
  """How much a change of one input entry moves other entries, relative to its own entry."""
  features = random_features(params, channels=2)
  variables, forward = init_and_apply(layer, features, spec)
  name = "layers_0" if "layers_0" in params else sorted(params)[0]
  bumped = jax.tree.map(lambda x: x, features)
  kernel = bumped[name]["kernel"]
  bumped[name]["kernel"] = kernel.at[(0,) * (kernel.ndim - 1)].add(1.0)
  change = jax.tree.map(lambda a, b: jnp.abs(a - b), forward(bumped), forward(features))
  own = float(jnp.max(change[name]["kernel"][(0,) * (kernel.ndim - 1)]))
  others = [change[name]["kernel"].at[(0,) * (kernel.ndim - 1)].set(0.0)] + [
      leaf for path, leaf in jax.tree_util.tree_leaves_with_path(change)
      if path[0].key != name or path[1].key != "kernel"]
  return max(float(jnp.max(x)) for x in others) / own


def test_identity_share_puts_the_initial_map_on_each_entry_itself():
  params, spec = weight_spaces.ALL["mlp"]()
  # Nearly all variance on the identity term: a bump at one entry stays at that entry.
  assert _spread_of_a_local_change(U.UNFLinear(4, identity_share=0.9999), params, spec) < 0.05
  # With all terms alike, pooled terms carry the bump to other entries and tensors.
  assert _spread_of_a_local_change(U.UNFLinear(4), params, spec) > 0.1
  with pytest.raises(ValueError, match="identity_share"):
    init_and_apply(U.UNFLinear(4, identity_share=1.5), random_features(params, 2), spec)


def test_kernels_are_independent_draws_with_one_over_rows_variance():
  # All kernels of a layer come from one normal draw (`unf._JointNormalDraw`): each must
  # still be its own part of it, scaled by 1/sqrt(its rows), and the draw follow the key.
  params, spec = weight_spaces.ALL["mlp"]()
  features = random_features(params, channels=16)
  layer = U.UNFLinear(64)
  variables = jax.jit(lambda key: layer.init(key, features, spec))(jax.random.PRNGKey(0))
  kernels = {name: np.asarray(value) for name, value in variables["params"].items()
             if name.startswith("kernel")}
  assert len(kernels) == len(jax.tree.leaves(params))
  for name, kernel in kernels.items():
    rows = kernel.shape[0]
    assert abs(kernel.std() * np.sqrt(rows) - 1.0) < 0.1, name
    assert abs(kernel.mean() * np.sqrt(rows)) < 0.1, name
  firsts = [kernel.reshape(-1)[:64] / kernel.std() for kernel in kernels.values()]
  for i, a in enumerate(firsts):
    for b in firsts[i + 1:]:
      assert abs(np.corrcoef(a, b)[0, 1]) < 0.6
  other = jax.jit(lambda key: layer.init(key, features, spec))(jax.random.PRNGKey(1))
  assert all(not np.allclose(kernels[name], other["params"][name]) for name in kernels)
