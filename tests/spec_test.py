"""Tests for unf_lopt.spec: validation errors, builders, the group action."""

import jax
import numpy as np
import pytest

import unf_lopt as U
import weight_spaces
from unf_lopt.permutations import permute, sample_permutations


def test_validate_returns_sizes_per_name():
  params, spec = weight_spaces.transformer(d=4, heads=2, head_dim=3, mlp_dim=5, vocab=6)
  sizes = U.validate_spec(spec, params)
  assert sizes["d"] == 4 and sizes["vocab"] == 6 and sizes["attn0.heads"] == 2
  assert sizes["attn1.qk"] == 3 and sizes["mlp0"] == 5


def test_wrong_rank_names_the_tensor():
  params, spec = weight_spaces.mlp()
  spec["Dense_1"]["bias"] = ("n2", "n2")
  with pytest.raises(U.SpecError, match=r"'Dense_1/bias' has shape \(3,\).*names 2 axes"):
    U.validate_spec(spec, params)


def test_inconsistent_sizes_name_both_tensors_and_axes():
  params, spec = weight_spaces.mlp((5, 4, 3))
  spec["Dense_1"]["bias"] = ("n1",)  # n1 has size 4, this bias has 3 entries
  message = r"'n1'.*'Dense_1/bias' axis 0 has size 3 but 'Dense_0/bias' axis 0 has size 4"
  with pytest.raises(U.SpecError, match=message):
    U.validate_spec(spec, params)


def test_structure_mismatch_lists_missing_and_extra_paths():
  params, spec = weight_spaces.mlp()
  del spec["Dense_0"]["bias"]
  spec["Dense_9"] = {"kernel": ("a", "b")}
  with pytest.raises(U.SpecError) as error:
    U.validate_spec(spec, params)
  assert "Dense_0/bias" in str(error.value) and "Dense_9/kernel" in str(error.value)


def test_non_tuple_leaf_is_rejected():
  with pytest.raises(U.SpecError, match="'w/0'.*must be a tuple"):
    U.validate_spec({"w": ["a", "b"]}, {"w": np.zeros((2, 2))})


def test_fixed_axes_may_differ_in_size():
  spec = {"a": (None, "n"), "b": (None, "n")}
  assert U.validate_spec(spec, {"a": np.zeros((2, 3)), "b": np.zeros((5, 3))}) == {"n": 3}


def test_mlp_spec_chains_names_and_checks_shapes():
  params, spec = weight_spaces.mlp((5, 4, 3))
  assert spec == {"Dense_0": {"kernel": ("n0", "n1"), "bias": ("n1",)},
                  "Dense_1": {"kernel": ("n1", "n2"), "bias": ("n2",)}}
  fixed = U.mlp_spec(params, fixed_input=True, fixed_output=True)
  assert fixed["Dense_0"]["kernel"] == (None, "n1") and fixed["Dense_1"]["bias"] == (None,)
  params["Dense_1"]["kernel"] = np.zeros((7, 3))
  with pytest.raises(U.SpecError, match="'Dense_1/kernel' takes 7 inputs.*'Dense_0' has 4"):
    U.mlp_spec(params)


def test_builders():
  assert U.recurrent_cell_spec("e", "h")["h"]["kernel"] == ("h", "h")
  gru = U.recurrent_cell_spec("e", "h", cell="gru")
  assert set(gru) == {"ir", "iz", "in", "hr", "hz", "hn"} and gru["hn"]["bias"] == ("h",)
  attention = U.attention_spec("d", prefix="a")
  assert attention["query"]["kernel"] == ("d", "a.heads", "a.qk") == attention["key"]["kernel"]
  assert attention["out"]["kernel"] == ("a.heads", "a.v", "d")
  assert U.conv_spec("i", "o")["kernel"] == (None, None, "i", "o")
  assert U.embed_spec("v", "d") == {"embedding": ("v", "d")}
  assert U.layer_norm_spec("d") == {"scale": ("d",), "bias": ("d",)}
  with pytest.raises(ValueError, match="lstm"):
    U.recurrent_cell_spec("e", "h", cell="lstm")


def test_permute_is_a_group_action():
  _, spec = weight_spaces.rnn()
  rng = np.random.default_rng(0)
  params = {"Embed_0": {"embedding": rng.normal(size=(5, 3))},
            "cell": {"i": {"kernel": rng.normal(size=(3, 4)), "bias": rng.normal(size=4)},
                     "h": {"kernel": rng.normal(size=(4, 4))}},
            "initial_state": rng.normal(size=(1, 4)),
            "Dense_0": {"kernel": rng.normal(size=(4, 5)), "bias": rng.normal(size=5)}}
  p = sample_permutations(rng, spec, params)
  q = sample_permutations(rng, spec, params)
  composed = {name: p[name][q[name]] for name in p}
  twice = jax.tree.leaves(permute(permute(params, spec, p), spec, q))
  once = jax.tree.leaves(permute(params, spec, composed))
  assert all(np.array_equal(a, b) for a, b in zip(twice, once))
  assert np.array_equal(permute(params, spec, p)["cell"]["h"]["kernel"],
                        params["cell"]["h"]["kernel"][p["h"]][:, p["h"]])
  identity = jax.tree.leaves(permute(params, spec, {}))
  assert all(np.array_equal(a, b) for a, b in zip(identity, jax.tree.leaves(params)))
