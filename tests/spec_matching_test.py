"""Tests for unf_lopt.spec_matching: weight spaces matched onto a trained structure."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import unf_lopt as U
from unf_lopt import features as features_lib
from unf_lopt.spec_matching import match_spec

MLP_TEMPLATE = {"Dense_0": {"kernel": ("n0", "n1"), "bias": ("n1",)},
                "Dense_1": {"kernel": ("n1", "n2"), "bias": ("n2",)}}


def zeros(shapes):
  return {k: zeros(v) if isinstance(v, dict) else np.zeros(v, np.float32)
          for k, v in shapes.items()}


def two_layer(names, sizes):
  (first, second), (a, b, c) = names, sizes
  return zeros({first: {"kernel": (a, b), "bias": (b,)}, second: {"kernel": (b, c), "bias": (c,)}})


@pytest.mark.parametrize("names,sizes", [(("layers_0", "layers_2"), (784, 128, 10)),
                                         (("hidden", "readout"), (50, 20, 7)),
                                         (("Dense_0", "Dense_1"), (3, 3, 3))])
@pytest.mark.parametrize("with_spec", [False, True])
def test_two_layer_mlps_match_the_template_layer_by_layer(names, sizes, with_spec):
  params = two_layer(names, sizes)
  match = match_spec(MLP_TEMPLATE, params, U.mlp_spec(params) if with_spec else None)
  first, second = names
  assert match.tensor_map == {f"{first}/kernel": "Dense_0/kernel", f"{first}/bias": "Dense_0/bias",
                              f"{second}/kernel": "Dense_1/kernel",
                              f"{second}/bias": "Dense_1/bias"}
  assert match.exact == with_spec
  U.validate_spec(match.user_spec, params)
  rekeyed = match.to_template(params)
  assert rekeyed["Dense_1"]["kernel"] is params[second]["kernel"]
  back = match.from_template(rekeyed)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  assert back[first]["bias"] is params[first]["bias"]


def test_leaves_may_carry_trailing_channels():
  params = two_layer(("a", "b"), (5, 4, 3))
  match = match_spec(MLP_TEMPLATE, params)
  features = jax.tree.map(lambda p: np.zeros((*p.shape, 19)), params)
  assert match.to_template(features)["Dense_0"]["kernel"].shape == (5, 4, 19)


def test_a_deeper_mlp_gets_an_error_that_says_what_differs():
  params = zeros({f"fc{i}": {"kernel": (a, b), "bias": (b,)}
                  for i, (a, b) in enumerate([(784, 128), (128, 64), (64, 10)])})
  for spec in (None, U.mlp_spec(params)):
    with pytest.raises(U.SpecError) as error:
      match_spec(MLP_TEMPLATE, params, spec)
    message = str(error.value)
    assert "numbers of tensors differ (6 vs 4)" in message
    assert "Dense_0/kernel(n0, n1)" in message and "fc2/kernel" in message
    assert "deepset_mlp_fmnist" in message


def test_other_wirings_and_ranks_are_told_apart():
  params = two_layer(("a", "b"), (5, 4, 3))
  # The second layer reads the network's input instead of the hidden layer.
  rewired = {"a": {"kernel": ("x", "h"), "bias": ("h",)}, "b": {"kernel": ("y", "o"),
                                                             "bias": ("o",)}}
  with pytest.raises(U.SpecError, match="axes are shared differently"):
    match_spec(MLP_TEMPLATE, params, rewired)
  # The same wiring as the template with the data axes fixed (infer_spec's true symmetry).
  fixed_io = {"a": {"kernel": (None, "h"), "bias": ("h",)}, "b": {"kernel": ("h", None),
                                                               "bias": (None,)}}
  with pytest.raises(U.SpecError, match="fixed axes differ"):
    match_spec(MLP_TEMPLATE, params, fixed_io)
  ranks = {"a": {"kernel": np.zeros((5, 4)), "bias": np.zeros(4)},
           "b": {"kernel": np.zeros((4, 3, 2)), "bias": np.zeros(3)}}
  with pytest.raises(U.SpecError, match="tensor ranks differ"):
    match_spec(MLP_TEMPLATE, ranks)
  # Without a spec, an axis name must get one size: the hidden widths disagree here.
  inconsistent = {"a": {"kernel": np.zeros((5, 4)), "bias": np.zeros(4)},
                  "b": {"kernel": np.zeros((6, 3)), "bias": np.zeros(3)}}
  with pytest.raises(U.SpecError, match="one size"):
    match_spec(MLP_TEMPLATE, inconsistent)


def test_fixed_axes_must_keep_their_trained_sizes():
  template = {"Conv_0": U.conv_spec("c0", "c1"), "Dense_0": U.dense_spec("c1", "c2")}
  template_shapes = zeros({"Conv_0": {"kernel": (3, 3, 1, 8), "bias": (8,)},
                           "Dense_0": {"kernel": (8, 10), "bias": (10,)}})
  same = zeros({"conv": {"kernel": (3, 3, 2, 16), "bias": (16,)},
                "head": {"kernel": (16, 5), "bias": (5,)}})
  spec = {"conv": U.conv_spec("in", "hidden"), "head": U.dense_spec("hidden", "out")}
  match = match_spec(template, same, spec, template_shapes=template_shapes)
  assert match.tensor_map["conv/kernel"] == "Conv_0/kernel"
  assert match.name_map == {"in": "c0", "hidden": "c1", "out": "c2"}
  larger_taps = zeros({"conv": {"kernel": (5, 5, 2, 16), "bias": (16,)},
                       "head": {"kernel": (16, 5), "bias": (5,)}})
  with pytest.raises(U.SpecError, match="sizes of fixed axes differ"):
    match_spec(template, larger_taps, spec, template_shapes=template_shapes)
  with pytest.raises(U.SpecError, match="fixed axis its trained size"):
    match_spec(template, larger_taps, template_shapes=template_shapes)


def test_symmetric_structures_keep_the_users_order():
  # Two heads read one hidden layer: swapping them is an automorphism of the structure,
  # so either assignment is valid; the one in the user's flatten order is chosen.
  template = {"body": U.dense_spec("x", "h"), "head_0": U.dense_spec("h", "o0"),
              "head_1": U.dense_spec("h", "o1")}
  params = zeros({"a_trunk": {"kernel": (4, 6), "bias": (6,)},
                  "b_policy": {"kernel": (6, 3), "bias": (3,)},
                  "c_value": {"kernel": (6, 3), "bias": (3,)}})
  spec = {"a_trunk": U.dense_spec("in", "hid"), "b_policy": U.dense_spec("hid", "p"),
          "c_value": U.dense_spec("hid", "v")}
  for given in (spec, None):
    match = match_spec(template, params, given)
    assert match.tensor_map["b_policy/kernel"] == "head_0/kernel"
    assert match.tensor_map["c_value/bias"] == "head_1/bias"


def test_structures_without_automorphisms_match_whatever_the_order():
  # The user's flatten order ("z..." first) is the reverse of the template's; the only
  # valid correspondence must still be found.
  params = zeros({"z_in": {"kernel": (5, 4), "bias": (4,)},
                  "a_out": {"kernel": (4, 3), "bias": (3,)}})
  spec = {"z_in": U.dense_spec("p", "q"), "a_out": U.dense_spec("q", "r")}
  match = match_spec(MLP_TEMPLATE, params, spec)
  assert match.tensor_map == {"a_out/bias": "Dense_1/bias", "a_out/kernel": "Dense_1/kernel",
                              "z_in/bias": "Dense_0/bias", "z_in/kernel": "Dense_0/kernel"}
  assert match.name_map == {"p": "n0", "q": "n1", "r": "n2"}


def random_structure(rng):
  """A random MLP or CNN: ``(spec, sizes)``, named or fixed taps, biases or not."""
  spec = {}
  fixed_input = rng.rand() < 0.3
  if rng.rand() < 0.5:  # MLP
    depth = rng.randint(1, 5)
    names = [None if fixed_input else "n0"] + [f"n{i}" for i in range(1, depth + 1)]
    for i in range(depth):
      spec[f"Dense_{i}"] = U.dense_spec(names[i], names[i + 1], use_bias=rng.rand() < 0.7)
  else:  # CNN: convs, then a dense head
    spatial = ("h", "w") if rng.rand() < 0.5 else (None, None)
    depth = rng.randint(1, 4)
    names = [None if fixed_input else "c0"] + [f"c{i}" for i in range(1, depth + 2)]
    for i in range(depth):
      spec[f"Conv_{i}"] = U.conv_spec(names[i], names[i + 1], spatial=spatial,
                                      use_bias=rng.rand() < 0.7)
    spec["Dense_0"] = U.dense_spec(names[depth], names[depth + 1])
  sizes = {}
  for layer in spec.values():
    for axes in layer.values():
      for name in axes:
        if name is not None and name not in sizes:
          sizes[name] = int(rng.randint(1, 9))
  return spec, sizes


def relabelled(spec, sizes, rng):
  """``spec`` under new random tensor paths and axis names, with new widths."""
  layer_names = {layer: "".join(rng.choice(list("abcdefghijklmnop"), 6)) for layer in spec}
  axis_names = {name: f"ax{rng.randint(10**6)}_{name}" for name in sizes}
  new_sizes = {axis_names[name]: int(rng.randint(1, 9)) for name in sizes}
  new_spec = {layer_names[layer]: {tensor: tuple(None if n is None else axis_names[n]
                                                 for n in axes)
                                   for tensor, axes in tensors.items()}
              for layer, tensors in spec.items()}
  return new_spec, new_sizes, layer_names, axis_names


def params_of(spec, sizes, fixed_size=3):
  return {layer: {tensor: np.zeros(tuple(fixed_size if n is None else sizes[n] for n in axes),
                                   np.float32)
                  for tensor, axes in tensors.items()}
          for layer, tensors in spec.items()}


def test_random_relabellings_match_back_to_the_original_correspondence():
  rng = np.random.RandomState(0)
  for _ in range(60):
    spec, sizes = random_structure(rng)
    user_spec, user_sizes, layer_names, axis_names = relabelled(spec, sizes, rng)
    template_shapes = params_of(spec, sizes)
    match = match_spec(spec, params_of(user_spec, user_sizes), user_spec,
                       template_shapes=template_shapes)
    expected = {f"{layer_names[layer]}/{tensor}": f"{layer}/{tensor}"
                for layer, tensors in spec.items() for tensor in tensors}
    assert match.tensor_map == expected
    assert match.name_map == {new: old for old, new in axis_names.items()}


def test_random_relabellings_without_a_spec_match_by_distinct_widths():
  rng = np.random.RandomState(1)
  for _ in range(40):
    depth = rng.randint(1, 5)
    spec = {f"Dense_{i}": U.dense_spec(f"n{i}", f"n{i + 1}", use_bias=rng.rand() < 0.7)
            for i in range(depth)}
    widths = rng.choice(np.arange(2, 60), depth + 1, replace=False)
    sizes = {f"n{i}": int(w) for i, w in enumerate(widths)}
    user_spec, _, layer_names, axis_names = relabelled(spec, sizes, rng)
    user_params = params_of(user_spec, {axis_names[k]: v for k, v in sizes.items()})
    match = match_spec(spec, user_params)
    assert match.tensor_map == {f"{layer_names[layer]}/{tensor}": f"{layer}/{tensor}"
                                for layer, tensors in spec.items() for tensor in tensors}
    U.validate_spec(match.user_spec, user_params)


# ---------------------------------------------------------------------------
# The optimizer: a trained UNF/NFN optimizer applied to a renamed, re-widened model.


def first_step_features(lopt, params, grads):
  """The update network's inputs on the first step, as `NominalOptimizer.direction` builds them."""
  momenta = features_lib.update_momenta(features_lib.init_momenta(params), grads, lopt.momentum)
  return features_lib.build_features(params, grads, momenta, jnp.asarray(0, jnp.int32),
                                     lopt.feature_normalization)


@pytest.mark.parametrize("kind", ["unf", "nfn"])
def test_pretrained_update_on_a_renamed_model_equals_the_template_models(kind):
  lopt, meta = U.pretrained(f"{kind}_mlp_fmnist")
  model = nn.Sequential([nn.Dense(20), nn.relu, nn.Dense(7)])
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 50)))["params"]
  grads = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(p.ndim), p.shape), params)
  rename = lambda tree: {"Dense_0": tree["layers_0"], "Dense_1": tree["layers_2"]}  # by hand
  optimizer = lopt.opt_fn(meta)
  state = optimizer.init(params)
  step, _ = jax.jit(optimizer.direction)(state, grads)
  # Independently: the update network run directly on the renamed tree.
  hand_inputs = first_step_features(lopt, rename(params), rename(grads))
  learned = lopt.network().apply(meta["update_net"], hand_inputs, lopt.spec)
  alpha, beta = np.exp(meta["log_alpha"]), np.exp(meta["log_beta"])
  g0 = jax.nn.sigmoid(meta["logit_g0"])
  for user, template in (("layers_0", "Dense_0"), ("layers_2", "Dense_1")):
    for tensor in ("kernel", "bias"):
      nominal = features_lib.momentum_step(g0, jnp.zeros_like(grads[user][tensor]),
                                           grads[user][tensor], lopt.momentum)
      expected = alpha * (nominal + beta * learned[template][tensor])
      np.testing.assert_allclose(step[user][tensor], expected, rtol=2e-5, atol=1e-9)


def test_matching_template_params_take_the_unchanged_path():
  lopt, meta = U.pretrained("unf_mlp_fmnist")
  params = two_layer(("Dense_0", "Dense_1"), (12, 9, 4))
  optimizer = lopt.opt_fn(meta)
  assert optimizer.fit(params) == (lopt.spec, None)
  renamed = two_layer(("first", "second"), (12, 9, 4))
  spec, match = optimizer.fit(renamed)
  assert spec is lopt.spec and match.tensor_map["second/kernel"] == "Dense_1/kernel"
  # The same weights under the two names take the same step.
  params = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(p.size), p.shape), params)
  renamed = {"first": params["Dense_0"], "second": params["Dense_1"]}
  grads = jax.tree.map(lambda p: p * 0.3 + 0.1, params)
  step, _ = optimizer.direction(optimizer.init(params), grads)
  renamed_grads = {"first": grads["Dense_0"], "second": grads["Dense_1"]}
  renamed_step, _ = optimizer.direction(optimizer.init(renamed), renamed_grads)
  np.testing.assert_array_equal(renamed_step["second"]["kernel"], step["Dense_1"]["kernel"])
  np.testing.assert_array_equal(renamed_step["first"]["bias"], step["Dense_0"]["bias"])


def test_other_fixed_sizes_than_trained_get_a_clear_error():
  template = {"Conv_0": U.conv_spec("c0", "c1"), "Dense_0": U.dense_spec("c1", "c2")}
  trained_on = zeros({"Conv_0": {"kernel": (3, 3, 1, 8), "bias": (8,)},
                      "Dense_0": {"kernel": (8, 10), "bias": (10,)}})
  lopt = U.NominalLOpt("unf", spec=template, params_like=trained_on, hidden=4, depth=1)
  meta = lopt.init(jax.random.PRNGKey(0))
  other = zeros({"conv": {"kernel": (5, 5, 2, 16), "bias": (16,)},
                 "head": {"kernel": (16, 5), "bias": (5,)}})
  with pytest.raises(U.SpecError, match=r"fixed axes of \['conv/kernel'\]"):
    lopt.opt_fn(meta).init(other)
  same_taps = zeros({"conv": {"kernel": (3, 3, 2, 16), "bias": (16,)},
                     "head": {"kernel": (16, 5), "bias": (5,)}})
  lopt.opt_fn(meta).init(same_taps)


def test_deepset_ignores_the_spec_and_needs_no_params_like():
  spec = {"Dense_0": {"kernel": ("a", "b"), "bias": ("b",)}}
  lopt = U.NominalLOpt("deepset", spec=spec)
  meta = lopt.init(jax.random.PRNGKey(0))
  other = zeros({"x": {"kernel": (3, 4, 5)}, "y": {"scale": (7,)}})
  state = lopt.opt_fn(meta).init(other)
  step, _ = lopt.opt_fn(meta).direction(state, jax.tree.map(np.ones_like, other))
  assert step["x"]["kernel"].shape == (3, 4, 5) and np.isfinite(step["y"]["scale"]).all()


def test_within_symmetric_structures_paths_and_leaf_names_are_kept():
  # In a residual Transformer every (d,) vector is interchangeable, and so are the blocks;
  # tensors keep their own path where they can, and their leaf name (scale, bias) otherwise.
  from weight_spaces import transformer  # pylint: disable=g-import-not-at-top
  params, spec = transformer(blocks=2)
  rename = lambda tree: {("block_b" if k == "Block_0" else "block_a" if k == "Block_1" else k): v
                         for k, v in tree.items()}
  match = match_spec(spec, rename(params), rename(spec))
  assert match.tensor_map["LayerNorm_f/scale"] == "LayerNorm_f/scale"
  assert match.tensor_map["Dense_head/kernel"] == "Dense_head/kernel"
  for path, template in match.tensor_map.items():
    assert path.rsplit("/", 1)[-1] == template.rsplit("/", 1)[-1]
  # The blocks are interchangeable; the user's flatten order decides (block_a first).
  assert match.tensor_map["block_a/Attention/out/kernel"] == "Block_0/Attention/out/kernel"


def test_a_fixed_axis_of_size_one_goes_to_any_axis():
  # infer_spec keeps a single output fixed; permuting one index is the identity anyway.
  spec = {"a": U.dense_spec("x", "h"), "b": U.dense_spec("h", None)}
  match = match_spec(MLP_TEMPLATE, two_layer(("a", "b"), (5, 4, 1)), spec)
  assert match.tensor_map["b/bias"] == "Dense_1/bias"
  assert match.name_map == {"x": "n0", "h": "n1"}
  with pytest.raises(U.SpecError, match="fixed axes differ"):
    match_spec(MLP_TEMPLATE, two_layer(("a", "b"), (5, 4, 2)), spec)
