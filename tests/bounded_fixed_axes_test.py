"""Large fixed axes are shared, not folded (``max_folded_size``), and ``tensor_pairs="linked"``."""

import itertools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import unf_lopt as U
from unf_lopt.layers import UNFLinear, engine
from unf_lopt.permutations import permute
from unf_lopt.spec import TensorInfo
from unf_lopt.update_nets import UpdateNet

FIXED = None


def weight_space(big=40, hidden=4, classes=3, channels=5, seed=0):
  """A dense layer from a flattened input of ``big`` features (fixed), a hidden layer, a head."""
  spec = {"Dense_0": {"kernel": (FIXED, "h"), "bias": ("h",)},
          "Dense_1": {"kernel": ("h", FIXED), "bias": (FIXED,)}}
  shapes = {"Dense_0": {"kernel": (big, hidden), "bias": (hidden,)},
            "Dense_1": {"kernel": (hidden, classes), "bias": (classes,)}}
  rng = np.random.default_rng(seed)
  features = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=(*s, channels)), jnp.float32),
                          shapes, is_leaf=lambda s: isinstance(s, tuple))
  return spec, features


# The same spec with the large fixed axis named, to permute it.
NAMED_BIG = {"Dense_0": {"kernel": ("big", "h"), "bias": ("h",)},
             "Dense_1": {"kernel": ("h", FIXED), "bias": (FIXED,)}}


def count(tree):
  return sum(np.size(leaf) for leaf in jax.tree.leaves(tree))


def init_apply(module, features, spec):
  variables = module.init(jax.random.PRNGKey(1), features, spec)
  return variables, jax.jit(lambda x: module.apply(variables, x, spec))


def max_difference(a, b):
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a),
                                                              jax.tree.leaves(b)))


def test_large_fixed_positions_takes_the_largest_until_the_rest_fits():
  conv = TensorInfo("c", (FIXED, FIXED, FIXED, "o"), (3, 3, 64, 8))
  assert engine.large_fixed_positions(conv, 16) == (2,)   # 3x3 taps still fold
  assert engine.large_fixed_positions(conv, 4) == (0, 2)  # one tap axis folds (3 <= 4)
  assert engine.large_fixed_positions(conv, 1) == (0, 1, 2)
  assert engine.large_fixed_positions(conv, None) == ()
  assert engine.large_fixed_positions(conv, 576) == ()
  with pytest.raises(ValueError, match="max_folded_size"):
    engine.large_fixed_positions(conv, 0)


def test_bounded_layer_is_exactly_equivariant_to_the_spec_and_the_shared_axis():
  spec, features = weight_space(big=40, hidden=4)
  _, apply = init_apply(UNFLinear(3, max_folded_size=16), features, spec)
  out = apply(features)
  rng = np.random.default_rng(0)
  # Every permutation of the hidden name, and random ones of the shared fixed axis with it.
  for hidden in itertools.permutations(range(4)):
    perms = {"h": np.asarray(hidden), "big": rng.permutation(40)}
    permuted_out = apply(permute(features, NAMED_BIG, perms, trailing_dims=1))
    assert max_difference(permuted_out, permute(out, NAMED_BIG, perms, trailing_dims=1)) < 1e-5


def test_update_net_is_equivariant_to_the_spec_but_tells_fixed_indices_apart():
  spec, features = weight_space(big=40, hidden=4, channels=19)
  _, apply = init_apply(UpdateNet("unf", max_folded_size=16), features, spec)
  out = apply(features)
  for hidden in itertools.permutations(range(4)):
    perms = {"h": np.asarray(hidden)}
    permuted_out = apply(permute(features, spec, perms, trailing_dims=1))
    assert max_difference(permuted_out, permute(out, spec, perms)) < 1e-5
  # Positional channels break the extra symmetry: permuting the fixed axis is no symmetry.
  perms = {"big": np.random.default_rng(0).permutation(40)}
  permuted_out = apply(permute(features, NAMED_BIG, perms, trailing_dims=1))
  assert max_difference(permuted_out, permute(out, NAMED_BIG, perms)) > 1e-4


def test_positional_channels_distinguish_entries_that_differ_only_in_their_fixed_index():
  spec, features = weight_space(big=40, hidden=4, channels=19)
  # Rows 0 and 1 of the large-axis kernel get identical features.
  kernel = features["Dense_0"]["kernel"]
  features["Dense_0"]["kernel"] = kernel.at[1].set(kernel[0])
  _, with_positions = init_apply(UpdateNet("unf", max_folded_size=16), features, spec)
  row = with_positions(features)["Dense_0"]["kernel"]
  assert float(jnp.max(jnp.abs(row[0] - row[1]))) > 1e-4
  # The shared layer alone (no positional channels) cannot tell them apart.
  _, shared = init_apply(UNFLinear(1, max_folded_size=16), features, spec)
  row = shared(features)["Dense_0"]["kernel"]
  np.testing.assert_allclose(row[0], row[1], atol=1e-6)
  channels = engine.positional_channels(TensorInfo("w", (FIXED, "h"), (40, 4)), 16)
  assert channels.shape == (40, 4, engine.POSITIONAL_CHANNELS)
  assert len({tuple(np.round(np.asarray(channels[i, 0]), 6)) for i in range(40)}) == 40


@pytest.mark.parametrize("module", [UNFLinear(1, max_folded_size=16),
                                    UpdateNet("unf", max_folded_size=16),
                                    UNFLinear(1, max_folded_size=16, tensor_pairs="linked")])
def test_meta_parameters_do_not_grow_with_a_large_fixed_axis(module):
  counts = []
  for big in (100, 1000):
    spec, features = weight_space(big=big, channels=19)
    counts.append(count(jax.eval_shape(
        lambda f, spec=spec: module.init(jax.random.PRNGKey(0), f, spec), features)))
  assert counts[0] == counts[1]
  legacy = UNFLinear(1)
  spec, features = weight_space(big=100, channels=19)
  assert count(jax.eval_shape(lambda f: legacy.init(jax.random.PRNGKey(0), f, spec),
                              features)) > 100 * 100 * 19


def cnn_weight_space(channels=19):
  """3x3 convs on RGB with fixed taps and a 10-class head: every fixed group folds at 16."""
  spec = {"Conv_0": {"kernel": (FIXED, FIXED, "rgb", "c1"), "bias": ("c1",)},
          "Conv_1": {"kernel": (FIXED, FIXED, "c1", "c2"), "bias": ("c2",)},
          "Dense_0": {"kernel": ("c2", FIXED), "bias": (FIXED,)}}
  shapes = {"Conv_0": {"kernel": (3, 3, 3, 4), "bias": (4,)},
            "Conv_1": {"kernel": (3, 3, 4, 5), "bias": (5,)},
            "Dense_0": {"kernel": (5, 10), "bias": (10,)}}
  rng = np.random.default_rng(0)
  features = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=(*s, channels)), jnp.float32),
                          shapes, is_leaf=lambda s: isinstance(s, tuple))
  return spec, features


@pytest.mark.parametrize("head", ["unf", "nfn", "deepset"])
def test_small_fixed_axes_still_fold_and_legacy_is_unchanged(head):
  spec, features = cnn_weight_space()
  if head == "nfn":
    spec = {**spec, "Dense_0": {"kernel": ("c2", "classes"), "bias": ("classes",)}}
  outputs = []
  for options in ({}, {"max_folded_size": None}, {"max_folded_size": 16}):
    net = UpdateNet(head, **options)
    variables = net.init(jax.random.PRNGKey(0), features, spec)
    outputs.append((variables, net.apply(variables, features, spec)))
  (legacy, legacy_out), *others = outputs
  for variables, out in others:
    assert jax.tree.structure(variables) == jax.tree.structure(legacy)
    assert max_difference(variables, legacy) == 0.0
    assert max_difference(out, legacy_out) == 0.0


def test_tensor_pairs_linked_is_equivariant_and_smaller():
  spec = {"a": {"kernel": ("i", "h"), "bias": ("h",)}, "b": {"kernel": ("h", "o")},
          "c": ("o",), "d": ("x",)}
  shapes = {"a": {"kernel": (2, 3), "bias": (3,)}, "b": {"kernel": (3, 2)}, "c": (2,),
            "d": (2,)}
  rng = np.random.default_rng(0)
  features = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=(*s, 5)), jnp.float32),
                          shapes, is_leaf=lambda s: isinstance(s, tuple))
  variables, apply = init_apply(UNFLinear(2, tensor_pairs="linked"), features, spec)
  everything = UNFLinear(2).init(jax.random.PRNGKey(0), features, spec)
  assert count(variables) < count(everything)
  out = apply(features)
  sizes = {"i": 2, "h": 3, "o": 2, "x": 2}
  for choice in itertools.product(*(itertools.permutations(range(n)) for n in sizes.values())):
    perms = {name: np.asarray(p) for name, p in zip(sizes, choice)}
    permuted_out = apply(permute(features, spec, perms, trailing_dims=1))
    assert max_difference(permuted_out, permute(out, spec, perms, trailing_dims=1)) < 1e-5
  # The global term reaches tensors without a shared name: "d" depends on "a".
  changed = jax.tree.map(lambda x: x, features)
  changed["a"]["kernel"] = changed["a"]["kernel"] + 1.0
  assert float(jnp.max(jnp.abs(apply(changed)["d"] - out["d"]))) > 1e-4
  with pytest.raises(ValueError, match="tensor_pairs"):
    UNFLinear(2, tensor_pairs="some").init(jax.random.PRNGKey(0), features, spec)


def optimizer_weight_space(big=40):
  spec, features = weight_space(big=big)
  params = jax.tree.map(lambda x: x[..., 0], features)
  return spec, params


def test_nominal_lopt_option_defaults_validation_and_counts():
  spec, params = optimizer_weight_space(big=200)
  default = U.NominalLOpt("unf", spec=spec, params_like=params)
  assert default.options()["max_folded_size"] == 16
  assert default.options()["tensor_pairs"] == "all"
  legacy = U.NominalLOpt("unf", spec=spec, params_like=params, max_folded_size=None)
  bounded = count(jax.eval_shape(default.init, jax.random.PRNGKey(0)))
  assert bounded < count(jax.eval_shape(legacy.init, jax.random.PRNGKey(0)))
  spec_big, params_big = optimizer_weight_space(big=2000)
  bigger = U.NominalLOpt("unf", spec=spec_big, params_like=params_big)
  assert count(jax.eval_shape(bigger.init, jax.random.PRNGKey(0))) == bounded
  for bad in (0, -3, 2.5, True, "16"):
    with pytest.raises(ValueError, match="max_folded_size"):
      U.NominalLOpt("unf", spec=spec, max_folded_size=bad)
  with pytest.raises(ValueError, match="tensor_pairs"):
    U.NominalLOpt("unf", spec=spec, tensor_pairs="none")


def test_bounded_optimizer_steps_and_is_equivariant():
  spec, params = optimizer_weight_space()
  lopt = U.NominalLOpt("unf", spec=spec, params_like=params)
  opt = lopt.opt_fn(lopt.init(jax.random.PRNGKey(0)))
  grads = jax.tree.map(lambda p: jnp.sin(3.0 * p), params)
  update = jax.jit(lambda p, g: opt.get_params(opt.update(opt.init(p), g)))
  new = update(params, grads)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new))
  perms = {"h": np.random.default_rng(1).permutation(4)}
  assert max_difference(update(permute(params, spec, perms), permute(grads, spec, perms)),
                        permute(new, spec, perms)) < 1e-6


def test_checkpoint_with_the_option_round_trips(tmp_path):
  spec, params = optimizer_weight_space()
  lopt = U.NominalLOpt("unf", spec=spec, params_like=params, max_folded_size=8,
                       tensor_pairs="linked")
  meta = lopt.init(jax.random.PRNGKey(0))
  U.save_checkpoint(tmp_path / "bounded", lopt, meta)
  stored = json.loads((tmp_path / "bounded" / "optimizer.json").read_text())
  # An older reader would build the legacy net: version 2 makes it refuse instead.
  assert stored["format_version"] == 2
  assert (stored["max_folded_size"], stored["tensor_pairs"]) == (8, "linked")
  loaded, loaded_meta = U.load_checkpoint(tmp_path / "bounded")
  assert loaded.options() == lopt.options()
  assert max_difference(loaded_meta, meta) == 0.0
  grads = jax.tree.map(jnp.ones_like, params)
  steps = [o.get_params(o.update(o.init(params), grads))
           for o in (lopt.opt_fn(meta), loaded.opt_fn(loaded_meta))]
  assert max_difference(*steps) == 0.0


def test_checkpoint_without_a_large_fixed_axis_stays_version_1(tmp_path):
  spec, features = cnn_weight_space()
  params = jax.tree.map(lambda x: x[..., 0], features)
  lopt = U.NominalLOpt("unf", spec=spec, params_like=params)
  U.save_checkpoint(tmp_path / "cnn", lopt, lopt.init(jax.random.PRNGKey(0)))
  stored = json.loads((tmp_path / "cnn" / "optimizer.json").read_text())
  assert stored["format_version"] == 1 and stored["max_folded_size"] == 16


def test_old_checkpoint_loads_with_every_fixed_axis_folded(tmp_path):
  spec, params = optimizer_weight_space()
  legacy = U.NominalLOpt("unf", spec=spec, params_like=params, max_folded_size=None)
  meta = legacy.init(jax.random.PRNGKey(0))
  U.save_checkpoint(tmp_path / "old", legacy, meta)
  config_path = tmp_path / "old" / "optimizer.json"
  config = json.loads(config_path.read_text())
  assert config["format_version"] == 1
  del config["max_folded_size"], config["tensor_pairs"]  # written before the options existed
  config_path.write_text(json.dumps(config))
  loaded, loaded_meta = U.load_checkpoint(tmp_path / "old")
  assert (loaded.max_folded_size, loaded.tensor_pairs) == (None, "all")
  assert loaded.network().max_folded_size is None
  grads = jax.tree.map(jnp.ones_like, params)
  new = loaded.opt_fn(loaded_meta).update(loaded.opt_fn(loaded_meta).init(params), grads)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new.params))


@pytest.mark.parametrize("name", ["unf_mlp_fmnist", "nfn_mlp_fmnist", "deepset_mlp_fmnist"])
def test_shipped_optimizers_load_as_legacy_and_step_as_with_any_bound(name):
  lopt, meta = U.pretrained(name)
  assert lopt.max_folded_size is None and lopt.tensor_pairs == "all"
  params = jax.eval_shape(lambda: jax.tree.map(lambda s: jnp.zeros(s), {
      "Dense_0": {"kernel": (64, 32), "bias": (32,)},
      "Dense_1": {"kernel": (32, 10), "bias": (10,)}}, is_leaf=lambda s: isinstance(s, tuple)))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32), params)
  grads = jax.tree.map(lambda p: 0.1 * jnp.cos(p), params)
  steps = []
  for bound in (None, 16):
    options = {**lopt.options(), "max_folded_size": bound}
    rebuilt = U.NominalLOpt(lopt.update_net, spec=lopt.spec, params_like=params, **options)
    opt = rebuilt.opt_fn(meta)
    steps.append(opt.get_params(opt.update(opt.init(params), grads)))
  assert max_difference(*steps) == 0.0
  assert math.isfinite(max_difference(steps[0], params))
