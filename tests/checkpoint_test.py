"""Tests for checkpoints: bit-exact round trips, atomic overwrite, clear errors."""

import importlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import unf_lopt as U
import weight_spaces


@pytest.fixture(scope="module")
def unf_cnn():
  """A UNF optimizer for a CNN's weight space, its meta-parameters and parameters: built once."""
  params, spec = weight_spaces.cnn(spatial=(None, None))
  lopt = U.NominalLOpt("unf", spec=spec, params_like=params)
  return lopt, lopt.init(jax.random.PRNGKey(0)), params


@pytest.fixture
def saved_unf(tmp_path, unf_cnn):
  """The module's UNF optimizer saved to a fresh checkpoint: ``(path, lopt, meta, params)``."""
  lopt, meta, params = unf_cnn
  path = tmp_path / "unf_cnn"
  U.save_checkpoint(path, lopt, meta, metadata={"task": "tiny", "outer_steps": 3})
  return path, lopt, meta, params


def test_round_trip_is_bit_exact_and_rebuilds_the_optimizer(saved_unf):
  path, lopt, meta, params = saved_unf
  loaded_lopt, loaded = U.load_checkpoint(path)
  assert loaded_lopt.update_net == "unf" and loaded_lopt.spec == lopt.spec
  assert jax.tree.structure(loaded) == jax.tree.structure(meta)
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(meta)):
    assert np.asarray(a).dtype == np.asarray(b).dtype
    np.testing.assert_array_equal(a, b)
  grads = jax.tree.map(jnp.ones_like, params)

  def first_update(optimizer_lopt, meta_params):
    optimizer = optimizer_lopt.opt_fn(meta_params)
    return optimizer.update(optimizer.init(params), grads)

  ours = jax.jit(lambda m: first_update(lopt, m))(meta)
  theirs = jax.jit(lambda m: first_update(loaded_lopt, m))(loaded)
  for a, b in zip(jax.tree.leaves(ours.params), jax.tree.leaves(theirs.params)):
    np.testing.assert_array_equal(a, b)
  from unf_lopt.checkpoint import read_metadata
  assert read_metadata(path)["task"] == "tiny"


def test_overwrite_replaces_the_checkpoint_and_leaves_no_staging(tmp_path, saved_unf):
  path, lopt, meta, _ = saved_unf
  changed = jax.tree.map(lambda a: a + 1, meta)
  U.save_checkpoint(path, lopt, changed)
  _, loaded = U.load_checkpoint(path)
  np.testing.assert_array_equal(loaded["log_alpha"], changed["log_alpha"])
  assert sorted(os.listdir(tmp_path)) == ["unf_cnn"]


def test_truncated_parameters_are_detected(saved_unf):
  path, *_ = saved_unf
  data = (path / "meta_params.msgpack").read_bytes()
  (path / "meta_params.msgpack").write_bytes(data[: len(data) // 2])
  with pytest.raises(U.CheckpointError, match="meta_params.msgpack.*truncated or corrupted"):
    U.load_checkpoint(path)


def test_corrupted_config_is_detected(saved_unf):
  path, *_ = saved_unf
  (path / "optimizer.json").write_text('{"format": "unf-lopt-checkpoint", "upd')
  with pytest.raises(U.CheckpointError, match="optimizer.json.*not valid JSON"):
    U.load_checkpoint(path)


def test_foreign_and_missing_checkpoints_are_rejected(tmp_path):
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "optimizer.json").write_text(json.dumps({"format": "orbax"}))
  (foreign / "meta_params.msgpack").write_bytes(b"\x80\x04pickle")
  with pytest.raises(U.CheckpointError, match="not an unf-lopt checkpoint"):
    U.load_checkpoint(foreign)
  with pytest.raises(U.CheckpointError, match="expected optimizer.json"):
    U.load_checkpoint(tmp_path / "nothing_here")


def test_unknown_pretrained_name_lists_what_exists(tmp_path, monkeypatch):
  # The module, not the function `unf_lopt.pretrained` that shadows its name.
  pretrained_module = importlib.import_module("unf_lopt.pretrained")
  lopt = U.NominalLOpt("sgdm")
  for name in ("sgdm_b", "sgdm_a"):
    U.save_checkpoint(tmp_path / name, lopt, lopt.init(jax.random.PRNGKey(0)))
  (tmp_path / "notes").mkdir()  # a directory without optimizer.json is not listed
  monkeypatch.setattr(pretrained_module, "SHIPPED", tmp_path)
  assert U.available_pretrained() == ["sgdm_a", "sgdm_b"]
  with pytest.raises(KeyError, match="no pretrained optimizer named 'nope'; available: "
                                     "sgdm_a, sgdm_b"):
    U.pretrained("nope")
  assert U.pretrained("sgdm_b")[0].update_net == "sgdm"


def test_nfn_head_without_bias_round_trips_as_version_2(tmp_path):
  params, spec = weight_spaces.mlp()
  lopt = U.NominalLOpt("nfn", spec=spec, params_like=params, nfn_head_bias=False)
  meta = lopt.init(jax.random.PRNGKey(0))
  U.save_checkpoint(tmp_path / "nfn", lopt, meta)
  config = json.loads((tmp_path / "nfn" / "optimizer.json").read_text())
  assert config["format_version"] == 2 and config["nfn_head_bias"] is False
  loaded, loaded_meta = U.load_checkpoint(tmp_path / "nfn")
  assert loaded.nfn_head_bias is False
  assert jax.tree.structure(loaded_meta) == jax.tree.structure(meta)
  with_bias = U.NominalLOpt("nfn", spec=spec, params_like=params)
  assert (sum(x.size for x in jax.tree.leaves(with_bias.init(jax.random.PRNGKey(0))))
          > sum(x.size for x in jax.tree.leaves(meta)))
  U.save_checkpoint(tmp_path / "default", with_bias, with_bias.init(jax.random.PRNGKey(0)))
  assert json.loads((tmp_path / "default" / "optimizer.json").read_text())["format_version"] == 1
