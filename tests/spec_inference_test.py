"""Tests for infer_spec (jaxpr tracing) and verify_spec, on a gallery of real-world-style models.

Every inferred spec is checked against an independent computation: the model is
run on parameters permuted by `unf_lopt.permutations` (not by `verify_spec`), and
a deliberately wrong spec must be rejected by `verify_spec`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import unf_lopt as U
from unf_lopt.evaluate.benchmarks import real_model_specs
from unf_lopt.permutations import permute, sample_permutations
from unf_lopt.spec import FIXED, is_axes, path_to_str
from unf_lopt.tasks.real_world_models import MODELS


def axes_by_path(spec):
  return {path_to_str(p): axes
          for p, axes in jax.tree_util.tree_flatten_with_path(spec, is_leaf=is_axes)[0]}


def names_of(spec):
  return {n for axes in axes_by_path(spec).values() for n in axes if n is not FIXED}


@pytest.fixture(scope="module")
def gallery():
  """Every gallery model with its inferred spec (built once per module)."""
  built = {}
  for name, build in MODELS.items():
    model = build()
    built[name] = model, U.infer_spec(model.variables, model.apply_fn, model.example_args)
  return built


@pytest.mark.parametrize("name", sorted(MODELS))
def test_inferred_spec_is_a_symmetry_and_a_broken_one_is_caught(gallery, name):
  model, spec = gallery[name]
  apply = jax.jit(model.apply_fn)
  reference = jax.tree.leaves(apply(model.variables, *model.example_args))
  names = names_of(spec)
  if name != "groupnorm_cnn":  # GroupNorm merges its channels into groups: nothing to permute
    assert names, f"{name}: some hidden axis must be permutable"
  # An independent check: permute with unf_lopt.permutations, not verify_spec's own code.
  rng = np.random.default_rng(0)
  for _ in range(2):
    moved = permute(model.variables, spec, sample_permutations(rng, spec, model.variables))
    for got, want in zip(jax.tree.leaves(apply(moved, *model.example_args)), reference):
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  report = U.verify_spec(model.apply_fn, model.variables, spec, *model.example_args)
  assert set(report) == names | ({"<all names>"} if names else set())
  if not names:
    return
  # Break the spec: one kernel-like tensor stops following one of its names.
  by_path = axes_by_path(spec)
  path, axes = max(((p, a) for p, a in by_path.items() if any(n is not FIXED for n in a)),
                   key=lambda item: (len(item[1]), item[0]))
  axis = next(i for i, n in enumerate(axes) if n is not FIXED)
  broken_name = axes[axis]
  flat, treedef = jax.tree_util.tree_flatten_with_path(spec, is_leaf=is_axes)
  leaves = [tuple(FIXED if (path_to_str(p) == path and i == axis) else n
                  for i, n in enumerate(a)) for p, a in flat]
  wrong = jax.tree_util.tree_unflatten(treedef, leaves)
  with pytest.raises(U.SpecError, match=f"changes its outputs: .*{broken_name!r}"):
    U.verify_spec(model.apply_fn, model.variables, wrong, *model.example_args)


def test_branch_ties_both_heads_to_the_trunk(gallery):
  spec = gallery["two_head_classifier"][1]
  hidden = spec["trunk_2"]["kernel"][1]
  assert hidden is not FIXED
  assert spec["digit_head"]["kernel"][0] == spec["parity_head"]["kernel"][0] == hidden


def test_projection_shortcut_is_tied_to_the_main_path(gallery):
  params = gallery["resnet_projection"][1]["params"]["ResidualBlock_1"]
  assert params["proj_conv"]["kernel"][3] == params["Conv_1"]["kernel"][3] is not FIXED
  stats = gallery["resnet_projection"][1]["batch_stats"]["ResidualBlock_1"]
  assert stats["BatchNorm_1"]["mean"] == (params["Conv_1"]["kernel"][3],)


def test_encoder_state_is_tied_to_the_decoder_carry(gallery):
  spec = gallery["seq2seq_lstm"][1]
  encoder, decoder = spec["LSTMCell_0"]["hf"]["kernel"], spec["LSTMCell_1"]["hf"]["kernel"]
  assert encoder == decoder and encoder[0] is not FIXED


@pytest.mark.parametrize("name, path", [
    ("sinusoidal_lm", "Embed_0/embedding"),          # a fixed position table pins the stream
    ("groupnorm_cnn", "Conv_0/kernel"),              # groups merge channels
    ("mlp_mixer", "MixerBlock_0/token_mixing_1/kernel"),  # the patch axis is positional
    ("flatten_cnn", "Conv_1/kernel"),                # a flatten merges channels and pixels
])
def test_patterns_that_pin_an_axis_keep_it_fixed(gallery, name, path):
  axes = axes_by_path(gallery[name][1])[path]
  assert axes[-1 if name in ("sinusoidal_lm", "groupnorm_cnn", "flatten_cnn") else 0] is FIXED


def test_equal_input_and_output_sizes_are_not_linked(gallery):
  spec = gallery["denoising_autoencoder"][1]
  assert spec["encode"]["kernel"][0] is FIXED and spec["decode"]["kernel"][1] is FIXED


def test_boxed_params_and_a_dict_out_of_call_order(gallery):
  spec = gallery["partitioned_mlp"][1]
  assert spec["Dense_1"]["kernel"].value[0] == spec["Dense_0"]["kernel"].value[1] is not FIXED
  order = gallery["out_of_order_mlp"][1]
  assert order["middle"]["kernel"][0] == order["embed_in"]["kernel"][1]
  assert order["readout"]["kernel"][0] == order["middle"]["kernel"][1]


def mlp_problem(widths=(4, 6, 5, 3)):
  model = nn.Sequential([layer for w in widths[1:-1] for layer in (nn.Dense(w), nn.relu)]
                        + [nn.Dense(widths[-1])])
  x = jax.random.normal(jax.random.PRNGKey(0), (3, widths[0]))
  params = jax.jit(model.init)(jax.random.PRNGKey(1), x)["params"]
  return params, (lambda p, x: model.apply({"params": p}, x)), x


def test_fixed_io_false_permutes_the_data_axes():
  params, fn, x = mlp_problem()
  spec = U.infer_spec(params, fn, (x,), fixed_io=False)
  assert spec["layers_0"]["kernel"][0] is not FIXED and spec["layers_4"]["bias"][0] is not FIXED
  # An equivariance: it holds when the inputs and outputs are permuted too.
  U.verify_spec(fn, params, spec, x, input_specs=((None, spec["layers_0"]["kernel"][0]),),
                output_spec=(None, spec["layers_4"]["bias"][0]))
  with pytest.raises(U.SpecError, match="changes its outputs"):
    U.verify_spec(fn, params, spec, x)


def test_overrides_by_path_and_by_axis_with_chosen_names():
  params, fn, x = mlp_problem()
  spec = U.infer_spec(params, fn, (x,), overrides={"layers_0/kernel": (..., "first"),
                                                    ("layers_2/kernel", 1): "second"})
  assert spec["layers_2"]["kernel"] == ("first", "second")
  assert spec["layers_4"]["kernel"] == ("second", FIXED)
  fixed = U.infer_spec(params, fn, (x,), overrides={("layers_2/bias", 0): FIXED})
  assert fixed["layers_2"]["kernel"][1] is FIXED and fixed["layers_4"]["kernel"][0] is FIXED
  U.verify_spec(fn, params, fixed, x)


def test_override_errors_name_their_culprits():
  params, fn, x = mlp_problem((4, 6, 5, 3))
  with pytest.raises(U.SpecError, match="'layers_9/kernel'.*did you mean .*'layers_0/kernel'"):
    U.infer_spec(params, fn, (x,), overrides={"layers_9/kernel": (..., "h")})
  with pytest.raises(U.SpecError, match="'layers_0/kernel' axis 0.*fixed.*data input"):
    U.infer_spec(params, fn, (x,), overrides={("layers_0/kernel", 0): "inputs"})
  with pytest.raises(U.SpecError, match="size 6.*size 5"):
    U.infer_spec(params, fn, (x,), overrides={("layers_0/kernel", 1): "h",
                                              ("layers_2/kernel", 1): "h"})
  with pytest.raises(U.SpecError, match="has shape \\(6, 5\\).*2 entries"):
    U.infer_spec(params, fn, (x,), overrides={"layers_2/kernel": ("h",)})
  with pytest.raises(U.SpecError, match="infer_spec needs the model"):
    U.infer_spec(params)


def test_primitive_rules_fix_what_they_must():
  w = {"a": jnp.ones((3, 4)), "b": jnp.ones((4, 2))}
  x = jnp.ones((5, 3))
  plain = U.infer_spec(w, lambda p, x: jnp.tanh(x @ p["a"]) @ p["b"], (x,))
  assert plain["a"][1] is not FIXED
  table = np.arange(4.0)  # a constant that varies along the hidden axis
  pinned = U.infer_spec(w, lambda p, x: jnp.tanh(x @ p["a"] + table) @ p["b"], (x,))
  assert pinned["a"][1] is FIXED
  flat = U.infer_spec(w, lambda p, x: jnp.tanh(x @ p["a"]).reshape(-1)[:8].reshape(4, 2) * p["b"],
                      (x,))
  assert flat["a"][1] is FIXED
  sorted_ = U.infer_spec(w, lambda p, x: jnp.sort(jnp.tanh(x @ p["a"]), axis=1) @ p["b"], (x,))
  assert sorted_["a"][1] is FIXED
  # A scan carries the hidden state: its axis is tied through every step.
  cell = {"h": jnp.ones((4, 4)), "i": jnp.ones((3, 4)), "o": jnp.ones((4, 2))}

  def rnn(p, xs):
    h, _ = jax.lax.scan(lambda h, x: (jnp.tanh(h @ p["h"] + x @ p["i"]), None),
                        jnp.zeros(4), xs)
    return h @ p["o"]

  spec = U.infer_spec(cell, rnn, (jnp.ones((6, 3)),))
  assert spec["h"] == (spec["i"][1],) * 2 == (spec["o"][0],) * 2 and spec["h"][0] is not FIXED


@pytest.mark.parametrize("seed", range(4))
def test_random_structures_infer_verified_specs(seed):
  """Property test: random MLP, CNN and RNN structures (depths, widths, strides)."""
  rng = np.random.default_rng(seed)
  widths = [int(w) for w in rng.integers(2, 7, size=rng.integers(3, 6))]
  params, fn, x = mlp_problem(tuple(widths))
  spec = U.infer_spec(params, fn, (x,))
  assert len(names_of(spec)) == len(widths) - 2  # one name per hidden layer
  U.verify_spec(fn, params, spec, x)

  channels = [int(c) for c in rng.integers(2, 6, size=rng.integers(1, 4))]
  strides = [int(s) for s in rng.integers(1, 3, size=len(channels))]
  cnn = nn.Sequential([layer for c, s in zip(channels, strides)
                       for layer in (nn.Conv(c, (3, 3), strides=s), nn.relu)]
                      + [lambda h: h.mean(axis=(1, 2)), nn.Dense(3)])
  images = jax.random.normal(jax.random.PRNGKey(seed), (2, 8, 8, 3))
  cnn_params = jax.jit(cnn.init)(jax.random.PRNGKey(1), images)["params"]
  cnn_fn = lambda p, x: cnn.apply({"params": p}, x)
  cnn_spec = U.infer_spec(cnn_params, cnn_fn, (images,))
  assert len(names_of(cnn_spec)) == len(channels)
  assert all(axes[:2] == (FIXED, FIXED) for path, axes in axes_by_path(cnn_spec).items()
             if path.endswith("kernel") and len(axes) == 4)  # filter taps stay in place
  U.verify_spec(cnn_fn, cnn_params, cnn_spec, images)

  cell = [nn.SimpleCell, nn.GRUCell, nn.LSTMCell][seed % 3](int(rng.integers(3, 7)))
  rnn = nn.Sequential([nn.RNN(cell), nn.Dense(2)])
  sequence = jax.random.normal(jax.random.PRNGKey(seed), (2, 5, 3))
  rnn_params = jax.jit(rnn.init)(jax.random.PRNGKey(2), sequence)["params"]
  rnn_fn = lambda p, x: rnn.apply({"params": p}, x)
  rnn_spec = U.infer_spec(rnn_params, rnn_fn, (sequence,))
  assert len(names_of(rnn_spec)) == 1  # the hidden state
  U.verify_spec(rnn_fn, rnn_params, rnn_spec, sequence)


@pytest.mark.parametrize("name", ["flatten_cnn", "resnet", "transformer"])
def test_inference_reproduces_hand_written_true_specs_of_real_size_models(name):
  apply_fn, params, example_args = real_model_specs.MODELS[name]()
  inferred = axes_by_path(U.infer_spec(params, apply_fn, example_args))
  hand = axes_by_path(real_model_specs.HAND_SPECS[name](params))
  assert inferred.keys() == hand.keys()
  renaming = {}
  for path, axes in hand.items():
    for mine, theirs in zip(inferred[path], axes):
      assert (mine is FIXED) == (theirs is FIXED), (path, inferred[path], axes)
      if mine is not FIXED:
        assert renaming.setdefault(theirs, mine) == mine, path
  assert len(set(renaming.values())) == len(renaming)  # one inferred name per hand-written name
