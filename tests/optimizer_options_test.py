"""The authors' optimizer details as NominalLOpt options: EMA momenta, clipped per-tensor feature
normalisation, the initial beta; each against a hand computation, plus equivariance, checkpoints,
evaluation and the meta-training flags."""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import unf_lopt as U
import weight_spaces
from unf_lopt import features
from unf_lopt import tasks as tasks_lib
from unf_lopt.evaluate import evaluation
from unf_lopt.meta_train import cli as meta_cli
from unf_lopt.meta_train.config import MetaTrainConfig
from unf_lopt.permutations import permute, sample_permutations

DECAYS = (0.1, 0.5, 0.9, 0.99, 0.999, 0.9999)  # the paper's, restated: not read from the code
AUTHORS = {"momentum": "ema", "feature_normalization": "clip_per_tensor", "initial_beta": 1e-4}


def random_like(params, seed, scale=1.0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: jnp.asarray(scale * rng.normal(size=np.shape(p)), jnp.float32),
                      params)


@pytest.mark.parametrize("momentum", ["ema", "accumulate"])
def test_sgdm_momenta_and_steps_match_a_numpy_recurrence(momentum):
  params = {"w": np.asarray([[0.5, -1.0], [2.0, 0.0]], np.float32)}
  grads = [{"w": np.asarray(g, np.float32)} for g in
           ([[1.0, -2.0], [0.5, 3.0]], [[-1.0, 0.0], [4.0, 1.0]], [[2.0, 2.0], [-3.0, 0.5]])]
  lopt = U.NominalLOpt("sgdm", momentum=momentum)
  opt = lopt.opt_fn(lopt.init(jax.random.PRNGKey(0)))  # alpha = 0.1, g0 = 0.9
  state = opt.init(params)
  for g in grads:
    state = opt.update(state, g, loss=jnp.float32(1.0))
  gain = (lambda d: 1.0 - d) if momentum == "ema" else (lambda d: 1.0)
  expected_momenta = []
  for decay in DECAYS:
    m = np.zeros((2, 2))
    for g in grads:
      m = decay * m + gain(decay) * g["w"]
    expected_momenta.append(m)
  w, nominal = params["w"].astype(np.float64), np.zeros((2, 2))
  for g in grads:
    nominal = 0.9 * nominal + gain(0.9) * g["w"]
    w = w - 0.1 * nominal
  assert state.momenta["w"].shape == (2, 2, len(DECAYS))
  for channel, want in enumerate(expected_momenta):
    np.testing.assert_allclose(state.momenta["w"][..., channel], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(state.nominal_momentum["w"], nominal, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(opt.get_params(state)["w"], w, rtol=1e-5, atol=1e-6)


def test_first_ema_step_is_ten_times_smaller():
  params, grads = {"w": jnp.zeros(3)}, {"w": jnp.asarray([1.0, -2.0, 4.0])}
  steps = {}
  for momentum in ("accumulate", "ema"):
    lopt = U.NominalLOpt("sgdm", momentum=momentum)
    opt = lopt.opt_fn(lopt.init(jax.random.PRNGKey(0)))
    steps[momentum] = opt.get_params(opt.update(opt.init(params), grads))["w"]
  np.testing.assert_allclose(steps["accumulate"], [-0.1, 0.2, -0.4], rtol=1e-6)
  np.testing.assert_allclose(steps["ema"], [-0.01, 0.02, -0.04], rtol=1e-5)


def test_per_channel_features_do_not_see_the_momentum_kind():
  # Each channel is divided by its own RMS, so the EMA's constant factor (1 - g) cancels: with the
  # default normalisation the EMA option changes the nominal term alone. The clip does not cancel.
  params = random_like({"w": jnp.zeros((4, 3))}, 0)
  accumulated, averaged = features.init_momenta(params), features.init_momenta(params)
  for step in range(4):
    grads = random_like(params, 1 + step)
    accumulated = features.update_momenta(accumulated, grads)
    averaged = features.update_momenta(averaged, grads, momentum="ema")
  built = {(kind, norm): features.build_features(params, grads, momenta, 4, norm)["w"]
           for kind, momenta in (("accumulate", accumulated), ("ema", averaged))
           for norm in features.FEATURE_NORMALIZATIONS}
  np.testing.assert_allclose(built["ema", "per_channel"], built["accumulate", "per_channel"],
                             rtol=1e-4, atol=1e-5)
  assert float(jnp.max(jnp.abs(built["ema", "clip_per_tensor"]
                               - built["accumulate", "clip_per_tensor"]))) > 0.1


def test_clip_per_tensor_normalization_by_hand():
  # Clipped: [[1, 0], [0, 0]]; mean square over all four entries 1/4; 1 / sqrt(1/4 + 1e-5).
  got = features.clip_per_tensor_normalize(jnp.asarray([[3.0, 0.0], [0.0, 0.0]]))
  np.testing.assert_allclose(got, [[1 / np.sqrt(0.25 + 1e-5), 0.0], [0.0, 0.0]], rtol=1e-6)
  # One weight tensor of 3 entries: 8 raw channels, clipped, scaled by ONE number.
  w = np.asarray([0.2, -3.0, 0.5], np.float32)
  g = np.asarray([1.5, 0.1, -0.4], np.float32)
  momenta = {"w": jnp.stack([jnp.asarray(w * (i + 1) / 4) for i in range(6)], axis=-1)}
  got = features.build_features({"w": w}, {"w": g}, momenta, step=7,
                                feature_normalization="clip_per_tensor")["w"]
  raw = np.stack([w, g] + [w * (i + 1) / 4 for i in range(6)], axis=-1).astype(np.float64)
  clipped = np.clip(raw, -1, 1)
  np.testing.assert_allclose(got[:, :8], clipped / np.sqrt((clipped ** 2).mean() + 1e-5),
                             rtol=1e-5)
  np.testing.assert_allclose(got[:, 8:], np.broadcast_to(
      np.tanh(7 / np.asarray([1, 3, 10, 30, 100, 300, 1e3, 3e3, 1e4, 3e4, 1e5]) - 1), (3, 11)),
      rtol=1e-5)
  # One scale keeps the channels' relative sizes where nothing is clipped (entries 0 and 2): the
  # first momentum is w / 4. The default scales each channel by its own RMS: the columns agree.
  unclipped = [0, 2]
  np.testing.assert_allclose(got[unclipped, 2], got[unclipped, 0] / 4, rtol=1e-5)
  default = features.build_features({"w": w}, {"w": g}, momenta, step=7)["w"]
  np.testing.assert_allclose(default[:, 2], default[:, 0], rtol=1e-5)


def test_initial_beta_sets_log_beta_and_scales_the_learned_term():
  params = random_like({"w": jnp.zeros((4, 3)), "b": jnp.zeros(3)}, 0)
  grads = jax.tree.map(jnp.zeros_like, params)  # no nominal term: the step is alpha * beta * f
  steps = {}
  for beta in (1e-3, 1e-4):
    lopt = U.NominalLOpt("deepset", initial_beta=beta)
    meta = lopt.init(jax.random.PRNGKey(1))
    np.testing.assert_allclose(float(meta["log_beta"]), np.log(beta), rtol=1e-6)
    opt = lopt.opt_fn(meta)
    steps[beta] = opt.direction(opt.init(params), grads)[0]
  assert U.NominalLOpt("deepset").initial_beta == 1e-3
  # The same key gives the same f: the step shrinks tenfold.
  for key in params:
    np.testing.assert_allclose(steps[1e-4][key], steps[1e-3][key] / 10, rtol=1e-5)
    assert float(jnp.max(jnp.abs(steps[1e-3][key]))) > 1e-7


@pytest.mark.slow  # compiles two UNF steps
def test_unf_step_stays_equivariant_with_the_authors_options():
  params, spec = weight_spaces.mlp((4, 3, 2))
  params = random_like(params, 0, scale=2.0)  # entries beyond [-1, 1]: the clip acts
  lopt = U.NominalLOpt("unf", spec=spec, params_like=params, **AUTHORS)
  meta = dict(jax.jit(lopt.init)(jax.random.PRNGKey(1)), log_beta=jnp.float32(0.0))  # beta = 1
  opt = lopt.opt_fn(meta)
  perms = sample_permutations(np.random.default_rng(2), spec, params)
  move = lambda tree: permute(tree, spec, perms)
  update = jax.jit(opt.update)
  state, moved = opt.init(params), opt.init(move(params))
  for step in range(2):
    grads = random_like(params, 10 + step, scale=2.0)
    state = update(state, grads, loss=jnp.float32(1.0))
    moved = update(moved, move(grads), loss=jnp.float32(1.0))
  for a, b in zip(jax.tree.leaves(opt.get_params(moved)), jax.tree.leaves(
      move(opt.get_params(state)))):
    np.testing.assert_allclose(a, b, atol=1e-5)
  # the permutation moved something, and the option changed the step
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(move(params)),
                                                   jax.tree.leaves(params)))
  default = U.NominalLOpt("unf", spec=spec, params_like=params).opt_fn(meta)
  default_state, default_update = default.init(params), jax.jit(default.update)
  for step in range(2):
    default_state = default_update(default_state, random_like(params, 10 + step, scale=2.0))
  assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree.leaves(default.get_params(default_state)),
      jax.tree.leaves(opt.get_params(state)))) > 1e-4


def first_update(lopt, meta, params):
  opt = lopt.opt_fn(meta)
  return opt.get_params(opt.update(opt.init(params), jax.tree.map(jnp.ones_like, params)))


def test_checkpoint_round_trip_keeps_the_options(tmp_path):
  params, spec = weight_spaces.mlp((3, 2))
  lopt = U.NominalLOpt("unf", spec=spec, params_like=params, **AUTHORS)
  meta = lopt.init(jax.random.PRNGKey(0))
  U.save_checkpoint(tmp_path / "authors", lopt, meta)
  stored = json.loads((tmp_path / "authors" / "optimizer.json").read_text())
  assert stored["format_version"] == 2  # an older unf-lopt refuses it
  loaded, loaded_meta = U.load_checkpoint(tmp_path / "authors")
  assert loaded.options() == lopt.options()
  assert (loaded.momentum, loaded.feature_normalization, loaded.initial_beta) == (
      "ema", "clip_per_tensor", 1e-4)
  for a, b in zip(jax.tree.leaves(first_update(loaded, loaded_meta, params)),
                  jax.tree.leaves(first_update(lopt, meta, params))):
    np.testing.assert_array_equal(a, b)
  # an optimizer with the default rule is still written as version 1
  U.save_checkpoint(tmp_path / "beta_only", U.NominalLOpt("sgdm", initial_beta=1e-4),
                    U.NominalLOpt("sgdm").init(jax.random.PRNGKey(0)))
  stored = json.loads((tmp_path / "beta_only" / "optimizer.json").read_text())
  assert stored["format_version"] == 1 and stored["initial_beta"] == 1e-4


def test_old_checkpoints_without_the_options_load_with_the_defaults(tmp_path):
  lopt = U.NominalLOpt("sgdm", momentum="ema")
  U.save_checkpoint(tmp_path / "old", lopt, lopt.init(jax.random.PRNGKey(0)))
  config_path = tmp_path / "old" / "optimizer.json"
  config = json.loads(config_path.read_text())
  for name in ("momentum", "feature_normalization", "initial_beta"):
    del config[name]
  config_path.write_text(json.dumps({**config, "format_version": 1}))
  loaded, _ = U.load_checkpoint(tmp_path / "old")
  assert (loaded.momentum, loaded.feature_normalization, loaded.initial_beta) == (
      "accumulate", "per_channel", 1e-3)
  shipped, _ = U.pretrained("unf_mlp_fmnist")  # written before the options existed
  assert shipped.options()["momentum"] == "accumulate"
  config_path.write_text(json.dumps({**config, "momentum": "nesterov"}))
  with pytest.raises(U.CheckpointError, match="momentum must be one of"):
    U.load_checkpoint(tmp_path / "old")


def test_evaluation_rebuilds_the_optimizer_with_its_options(tmp_path):
  task = tasks_lib.get_task("tiny_mlp")
  params_like = jax.eval_shape(task.init, jax.random.PRNGKey(0))
  lopt = U.NominalLOpt("deepset", **AUTHORS)
  U.save_checkpoint(tmp_path / "opt", lopt, lopt.init(jax.random.PRNGKey(0)))
  loaded, _ = evaluation.load_optimizer(str(tmp_path / "opt"), task)
  assert loaded.options() == lopt.options()
  assert jax.tree.structure(loaded.params_like) == jax.tree.structure(params_like)


def test_meta_training_flags_reach_the_optimizer():
  parser = meta_cli._parser()
  args = parser.parse_args(["--out", "unused", "--task", "tiny_mlp", "--momentum", "ema",
                            "--feature-normalization", "clip_per_tensor",
                            "--initial-beta", "1e-4"])
  config = meta_cli._config(parser, args)
  assert (config.momentum, config.feature_normalization, config.initial_beta) == (
      "ema", "clip_per_tensor", 1e-4)
  assert config.fingerprint() != MetaTrainConfig(task="tiny_mlp").fingerprint()
  with pytest.raises(ValueError, match="momentum must be one of"):
    MetaTrainConfig(momentum="nesterov")
  with pytest.raises(ValueError, match="feature_normalization must be one of"):
    MetaTrainConfig(feature_normalization="layer")
  with pytest.raises(ValueError, match="initial_beta must be positive"):
    MetaTrainConfig(initial_beta=0.0)


def test_bad_options_are_refused():
  with pytest.raises(ValueError, match="momentum must be one of"):
    U.NominalLOpt("sgdm", momentum="nesterov")
  with pytest.raises(ValueError, match="feature_normalization must be one of"):
    U.NominalLOpt("deepset", feature_normalization="layer")
  with pytest.raises(ValueError, match="initial_beta must be a positive number"):
    U.NominalLOpt("deepset", initial_beta=-1.0)


def test_ablation_runs_differ_only_in_their_option(tmp_path):
  from unf_lopt.evaluate.experiments import ablation  # pylint: disable=g-import-not-at-top
  args = argparse.Namespace(outer_steps=7, num_runs=4, trunc_length=5, horizon=20,
                            meta_learning_rate=1e-2, seed=3, checkpoint_every=2)
  parser = meta_cli._parser()
  configs = {name: meta_cli._config(parser, parser.parse_args(
      ablation.meta_train_flags(name, tmp_path, args))).to_dict() for name in ablation.VARIANTS}
  for name, (update_net, options) in ablation.VARIANTS.items():
    ours = configs[update_net]
    differing = {key for key in ours if configs[name][key] != ours[key]}
    assert differing == set(options), name
    assert {key: configs[name][key] for key in options} == options
    assert (configs[name]["outer_steps"], configs[name]["seed"]) == (7, 3)
  # The table's paired difference: mean and standard error of per-seed differences.
  np.testing.assert_allclose(
      evaluation.mean_and_standard_error(np.array([3.0, 5.0, 4.0]) - np.array([1.0, 2.0, 3.0])),
      (2.0, 1 / np.sqrt(3)))


def _head_spread(lopt, meta, params, spec):
  """How far a change of one entry's features moves the update net's output elsewhere (relative)."""
  net = lopt.network()
  features_of = random_like(jax.tree.map(lambda p: np.zeros((*np.shape(p), features.NUM_FEATURES)),
                                         params), seed=5)
  name = sorted(params)[0]
  bumped = jax.tree.map(lambda x: x, features_of)
  bumped[name]["kernel"] = bumped[name]["kernel"].at[0, 0].add(3.0)
  out, out_bumped = (net.apply(meta["update_net"], x, spec) for x in (features_of, bumped))
  change = jax.tree.map(lambda a, b: jnp.abs(a - b), out_bumped, out)
  own = float(change[name]["kernel"][0, 0])
  change[name]["kernel"] = change[name]["kernel"].at[0, 0].set(0.0)
  return max(float(jnp.max(x)) for x in jax.tree.leaves(change)) / own


def test_identity_share_sets_only_the_unf_heads_initialisation(tmp_path):
  params, spec = weight_spaces.mlp((3, 4, 2))
  plain = U.NominalLOpt("unf", spec=spec, params_like=params)
  local = U.NominalLOpt("unf", spec=spec, params_like=params, identity_share=0.9999)
  key = jax.random.PRNGKey(1)
  meta_plain, meta_local = plain.init(key), local.init(key)
  # The same maps: the same meta-parameters, and the same trunk (pointwise) values.
  assert jax.tree.map(jnp.shape, meta_plain) == jax.tree.map(jnp.shape, meta_local)
  for layer in ("DeepSetLinear_0", "DeepSetLinear_1", "DeepSetLinear_2"):
    for a, b in zip(jax.tree.leaves(meta_plain["update_net"]["params"][layer]),
                    jax.tree.leaves(meta_local["update_net"]["params"][layer])):
      np.testing.assert_array_equal(a, b)
  # Nearly all the head's initial variance on each entry's own channels: the update of one
  # entry hardly depends on the others, where the plain head's pooled terms spread it.
  assert _head_spread(local, meta_local, params, spec) < 0.05
  assert _head_spread(plain, meta_plain, params, spec) > 0.1

  U.save_checkpoint(tmp_path / "local", local, meta_local)
  loaded, _ = U.load_checkpoint(tmp_path / "local")
  assert loaded.identity_share == 0.9999 and loaded.options() == local.options()
  parser = meta_cli._parser()
  config = meta_cli._config(parser, parser.parse_args(
      ["--out", "unused", "--task", "tiny_mlp", "--identity-share", "0.8"]))
  assert config.identity_share == 0.8
  from unf_lopt.meta_train.trainer import MetaTrainer  # pylint: disable=g-import-not-at-top
  assert MetaTrainer(config, quiet=True).lopt.identity_share == 0.8
  assert config.fingerprint() != MetaTrainConfig(task="tiny_mlp").fingerprint()
  with pytest.raises(ValueError, match="identity_share must be in"):
    MetaTrainConfig(identity_share=1.0)
  for bad in (0.0, 1.5, True, "0.8"):
    with pytest.raises(ValueError, match="identity_share must be None or a number"):
      U.NominalLOpt("unf", spec=spec, params_like=params, identity_share=bad)
