"""learned_optimization interop: our optimizer in its PES, its tasks and optimizers in ours."""

import csv
import json

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unf_lopt import tasks
import unf_lopt as U
from unf_lopt.evaluate.commands import evaluate
from unf_lopt.integrations import learned_optimization as L
from unf_lopt.meta_train import cli
from unf_lopt.meta_train.backends import make_trainer
from unf_lopt.meta_train.config import MetaTrainConfig
from unf_lopt.tasks import lo_tasks

lo = L.lo


def flat(tree):
  return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


def read_csv(path):
  with open(path, newline="") as handle:
    return list(csv.DictReader(handle))


# -- compatibility layer ------------------------------------------------------

def test_compat_layer_restores_the_removed_names_once():
  for name in ("tree_multimap", "tree_map", "tree_leaves", "tree_flatten", "tree_unflatten",
               "tree_structure", "ShapedArray"):
    assert hasattr(jax, name), name
  assert jax.lib.xla_client.Device is jax.Device
  assert L.apply_jax_compat() == []  # already applied by the import: nothing left to add
  summed = jax.tree_multimap(lambda a, b: a + b, {"x": 1, "y": (2,)}, {"x": 10, "y": (20,)})
  assert summed == {"x": 11, "y": (22,)}
  assert jax.ShapedArray((2,), jnp.float32).shape == (2,)


# -- our optimizer as a learned_optimization LearnedOptimizer ------------------

def test_adapted_optimizer_takes_the_same_steps_as_ours():
  params = {"w": jnp.arange(6.0).reshape(3, 2), "b": jnp.ones(2)}
  lopt = U.NominalLOpt("deepset")
  meta = lopt.init(jax.random.PRNGKey(0))
  ours = lopt.opt_fn(meta)
  adapted = L.as_lo_learned_optimizer(lopt).opt_fn(meta)
  assert isinstance(adapted, lo.opt_base.Optimizer)
  state = ours.init(params, num_steps=4)
  lo_state = adapted.init(params, "model state", num_steps=4, key=jax.random.PRNGKey(1))
  for step in range(4):
    grads = jax.tree.map(lambda p, step=step: jnp.sin(p + step), params)
    state = ours.update(state, grads, loss=jnp.float32(1.0))
    lo_state = adapted.update(lo_state, grads, loss=jnp.float32(1.0), model_state="new state")
  np.testing.assert_array_equal(flat(adapted.get_params(lo_state)), flat(ours.get_params(state)))
  assert adapted.get_state(lo_state) == "new state"
  # A non-finite gradient is skipped and counted, as by our optimizer.
  bad = jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), params)
  skipped = adapted.update(lo_state, bad, loss=jnp.float32(1.0))
  np.testing.assert_array_equal(flat(skipped.params), flat(lo_state.params))
  assert int(skipped.inner.skipped_steps) == 1


def test_lo_pes_estimate_of_our_optimizer_matches_autodiff():
  """lo's first PES truncation with our sgdm optimizer vs. the autodiff gradient.

  On FixedDimQuadraticFamily, before any reset the PES estimate is antithetic ES
  of the truncation's mean loss, so over 256 tasks it must point where the
  autodiff gradient of that loss (averaged over 4096 sampled tasks) points.
  """
  steps, num_tasks = 5, 256
  family = lo.quadratics.FixedDimQuadraticFamily(10)
  lopt = U.NominalLOpt("sgdm")
  meta = lopt.init(jax.random.PRNGKey(0))
  estimator = lo.truncated_pes.TruncatedPES(
      family, L.as_lo_learned_optimizer(lopt),
      lo.truncation_schedule.ConstantTruncationSchedule(100), num_tasks=num_tasks,
      trunc_length=steps, steps_per_jit=steps, std=0.01)
  weights = lo.gradient_learner.WorkerWeights(
      theta=meta, theta_model_state=None,
      outer_state=lo.gradient_learner.OuterState(jnp.asarray(0)))
  state = estimator.init_worker_state(weights, jax.random.PRNGKey(1))
  estimate = estimator.compute_gradient_estimate(weights, jax.random.PRNGKey(2), state)[0].grad

  def truncation_loss(meta, key):
    target_key, init_key = jax.random.split(key)
    target = jax.random.normal(target_key, (10,))
    optimizer = lopt.opt_fn(meta)
    inner = optimizer.init(jax.random.normal(init_key, (10,)), num_steps=100)

    def step(inner, _):
      loss, grads = jax.value_and_grad(lambda p: jnp.sum((target - p) ** 2))(
          optimizer.get_params(inner))
      return optimizer.update(inner, grads, loss=loss), loss

    return jax.lax.scan(step, inner, None, length=steps)[1].mean()

  keys = jax.random.split(jax.random.PRNGKey(3), 4096)
  reference = jax.jit(jax.vmap(jax.grad(truncation_loss), (None, 0)))(meta, keys)
  reference = flat(jax.tree.map(lambda g: g.mean(0), reference))
  estimate = flat(estimate)
  cosine = estimate @ reference / np.linalg.norm(estimate) / np.linalg.norm(reference)
  assert cosine > 0.95, (estimate, reference)
  assert 0.75 < np.linalg.norm(estimate) / np.linalg.norm(reference) < 1.3, (estimate, reference)


def _meta_train_under_lo(family, lopt, num_tasks, outer_steps=3):
  learned_opt = L.as_lo_learned_optimizer(lopt)
  estimator = lo.truncated_pes.TruncatedPES(
      family, learned_opt, lo.truncation_schedule.ConstantTruncationSchedule(10),
      num_tasks=num_tasks, trunc_length=5, steps_per_jit=5, random_initial_iteration_offset=10)
  learner = lo.gradient_learner.SingleMachineGradientLearner(
      learned_opt, [estimator], lo.opt_base.Adam(3e-3))
  state = learner.init(jax.random.PRNGKey(0))
  history = [learner.gradient_learner.get_lopt_params(state.gradient_learner_state)]
  losses = []
  for step in range(outer_steps):
    state, loss, _ = learner.update(state, jax.random.PRNGKey(10 + step))
    losses.append(float(loss))
    history.append(learner.gradient_learner.get_lopt_params(state.gradient_learner_state))
  return history, losses


def _assert_learning(history, losses):
  assert np.all(np.isfinite(losses))
  vectors = [flat(meta) for meta in history]
  assert all(np.all(np.isfinite(v)) for v in vectors)
  for before, after in zip(vectors, vectors[1:]):
    # Adam moves every meta-parameter that got a gradient by about its learning rate.
    assert 1e-4 < np.max(np.abs(after - before)) < 1e-2


def test_unf_meta_trains_under_lo_pes_on_the_quadratic_family():
  family = lo.quadratics.FixedDimQuadraticFamily(10)
  lopt = U.NominalLOpt("unf", spec=("coordinates",), params_like=jnp.zeros(10))
  history, losses = _meta_train_under_lo(family, lopt, num_tasks=4)
  _assert_learning(history, losses)
  assert set(history[-1]) == {"log_alpha", "log_beta", "logit_g0", "update_net"}


def test_unf_meta_trains_under_lo_pes_on_tiny_mlp():
  task = tasks.get_task("tiny_mlp")
  family = lo_tasks.as_lo_task_family(task)
  lo_task = family.task_fn(family.sample(jax.random.PRNGKey(0)))
  # The wrapped task's data and loss are ours.
  batch = next(family.datasets.train)
  params = lo_task.init(jax.random.PRNGKey(1))
  assert float(lo_task.loss(params, None, batch)) == pytest.approx(float(task.loss(params, batch)))
  lopt = U.NominalLOpt("unf", spec=task.spec,
                       params_like=jax.eval_shape(task.init, jax.random.PRNGKey(0)))
  history, losses = _meta_train_under_lo(family, lopt, num_tasks=2)
  _assert_learning(history, losses)
  assert 1.0 < losses[0] < 1.5 * np.log(10)  # cross-entropy of an untrained 10-class MLP


def test_backend_learned_optimization_writes_our_outputs(tmp_path):
  config = MetaTrainConfig(task="tiny_mlp", update_net="deepset", outer_steps=3, num_runs=2,
                           trunc_length=5, horizon=10, log_every=1, checkpoint_every=2,
                           backend="learned_optimization")
  trainer = make_trainer(config, tmp_path / "run", quiet=True)
  meta = trainer.run()
  lopt, stored = U.load_checkpoint(tmp_path / "run" / "optimizer")
  assert lopt.update_net == "deepset"
  np.testing.assert_array_equal(flat(stored), flat(meta))
  # Both backends start from the same meta-parameters; these moved.
  initial = trainer.lopt.init(jax.random.fold_in(jax.random.PRNGKey(0), 0))
  assert np.all(np.isfinite(flat(meta))) and not np.allclose(flat(meta), flat(initial))
  records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
             .splitlines()]
  assert [r["step"] for r in records] == [1, 2, 3]
  assert all(np.isfinite(r["meta_loss"]) and r["inner_steps_per_s"] > 0 for r in records)
  assert (tmp_path / "run" / "checkpoints" / "step_0000002" / "optimizer").is_dir()
  assert json.loads((tmp_path / "run" / "config.json").read_text())["backend"] == \
      "learned_optimization"
  # No resuming with this backend: an existing run is refused before any compute.
  with pytest.raises(ValueError, match="cannot resume"):
    make_trainer(config, tmp_path / "run", quiet=True)


def test_backend_learned_optimization_shares_the_ctrl_c_handling(tmp_path, monkeypatch):
  from unf_lopt.meta_train import lo_backend, outer_loop  # pylint: disable=g-import-not-at-top
  original = lo_backend.LOMetaTrainer.step

  def step(self, state, outer_step):
    if outer_step == 2:
      raise KeyboardInterrupt
    return original(self, state, outer_step)

  monkeypatch.setattr(lo_backend.LOMetaTrainer, "step", step)
  config = MetaTrainConfig(task="lo:quadratic", update_net="sgdm", outer_steps=5, num_runs=2,
                           trunc_length=5, horizon=10, log_every=1, checkpoint_every=10,
                           backend="learned_optimization")
  trainer = make_trainer(config, tmp_path / "run", quiet=True)
  with pytest.raises(outer_loop.TrainingInterrupted, match="this backend cannot resume"):
    trainer.run()
  # The meta-parameters of the last finished step, in our format; no training state.
  _, saved = U.load_checkpoint(tmp_path / "run" / "checkpoints" / "step_0000002" / "optimizer")
  np.testing.assert_array_equal(flat(saved), flat(trainer.meta_params(trainer.state)))
  steps = [json.loads(line)["step"] for line in
           (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert steps == [1, 2]


# -- learned_optimization's tasks inside ours ----------------------------------

def test_lo_tasks_as_ours_compute_lo_losses():
  noisy = tasks.get_task("lo:noisy_quadratic_family")
  rows = noisy.data_arrays("train")
  params = noisy.init(jax.random.PRNGKey(0))
  batch = {key: value[:3] for key, value in rows.items()}
  expected = np.mean([float(noisy.lo_task.loss(params, jax.random.PRNGKey(seed), None))
                      for seed in batch["seed"]])
  assert float(noisy.loss(params, batch)) == pytest.approx(expected, rel=1e-5)

  family = tasks.get_task("lo:quadratic_family", task_seed=3)
  target = lo.quadratics.FixedDimQuadraticFamily(10).sample(
      jax.random.fold_in(jax.random.PRNGKey(3), 1))
  params = family.init(jax.random.PRNGKey(5))
  one_row = {key: value[:1] for key, value in family.data_arrays("test").items()}
  assert float(family.loss(params, one_row)) == pytest.approx(
      float(np.sum((np.asarray(target) - np.asarray(params)) ** 2)), rel=1e-5)
  assert family.spec(params) == ("coordinates",)

  with_data = tasks.get_task("lo:quadratic_family_data")
  rows = with_data.data_arrays("train")
  assert rows["leaf_0"].shape == (len(rows["seed"]),)  # one noise scalar per lo batch
  params = with_data.init(jax.random.PRNGKey(0))
  one_row = {key: value[:1] for key, value in rows.items()}
  expected = float(with_data.lo_task.loss(params, None, jnp.asarray(rows["leaf_0"][0])))
  assert float(with_data.loss(params, one_row)) == pytest.approx(expected, rel=1e-5)


def test_unregistered_task_gets_the_spec_traced_from_its_loss():
  task = tasks.get_task("lo:quadratics.QuadraticTask", dim=4)
  params = task.init(jax.random.PRNGKey(0)) + jnp.arange(4.0)  # distinct entries
  spec = task.spec(params)
  assert spec[0] is not U.FIXED  # a sum over the coordinates: they may be permuted
  batch = task.dummy_batch()
  moved = params[np.array([2, 0, 3, 1])]
  assert not np.allclose(moved, params)
  np.testing.assert_allclose(task.loss(moved, batch), task.loss(params, batch), rtol=1e-6)


def test_unknown_lo_names_are_reported():
  with pytest.raises(KeyError, match="quadratic_family"):
    tasks.get_task("lo:no_such_task")
  with pytest.raises(ValueError, match="takes no options"):
    tasks.get_task("lo:quadratic", dim=3)


def test_our_meta_training_and_evaluation_accept_lo_tasks(tmp_path, capsys):
  run = tmp_path / "unf_quadratic"
  assert cli.main(["--task", "lo:quadratic", "--update-net", "unf", "--outer-steps", "2",
                   "--num-runs", "2", "--trunc-length", "5", "--horizon", "10", "--quiet",
                   "--out", str(run)]) == 0
  lopt, meta = U.load_checkpoint(run / "optimizer")
  assert lopt.update_net == "unf" and np.all(np.isfinite(flat(meta)))
  out = tmp_path / "eval"
  assert evaluate.main(["--task", "lo:quadratic", "--optimizers", f"{run},adam,lo:mlp_lopt",
                          "--steps", "30", "--seeds", "2", "--eval-every", "10",
                          "--final-window", "5", "--out", str(out), "--quiet"]) == 0
  summary = json.loads((out / "summary.json").read_text())
  assert [row["optimizer"] for row in summary["rows"]] == ["unf_quadratic", "adam", "lo:mlp_lopt"]
  assert all(np.isfinite(row["final_train_loss"]) for row in summary["rows"])
  assert "lo:mlp_lopt" in capsys.readouterr().out


def test_cli_backend_on_an_lo_family(tmp_path, capsys):
  run = tmp_path / "lo_family"
  assert cli.main(["--task", "lo:quadratic_family", "--update-net", "sgdm", "--backend",
                   "learned_optimization", "--outer-steps", "2", "--num-runs", "4",
                   "--trunc-length", "5", "--horizon", "10", "--quiet", "--out", str(run)]) == 0
  _, meta = U.load_checkpoint(run / "optimizer")
  assert sorted(meta) == ["log_alpha", "logit_g0"] and np.all(np.isfinite(flat(meta)))
  with pytest.raises(SystemExit) as exit:  # bad input exits 2 before any compute
    cli.main(["--task", "lo:quadratic", "--backend", "learned_optimization",
              "--meta-loss", "final", "--out", str(tmp_path / "x")])
  assert exit.value.code == 2 and "--meta-loss final needs" in capsys.readouterr().err
  assert not (tmp_path / "x").exists()


# -- learned_optimization's learned optimizers inside unf-evaluate --------------

def _manual_curve(lopt, meta, task, seed, steps):
  """Training losses of one seed, stepping the lo optimizer by hand (evaluation's seeding)."""
  optimizer = lopt.opt_fn(meta)
  init_key, data_key = jax.random.split(jax.random.PRNGKey(seed))
  state = optimizer.init(task.init(init_key), num_steps=steps)
  data = task.data_arrays("train")
  size = len(data["label"])
  losses = []
  for step in range(steps):
    rows = np.asarray(jax.random.randint(jax.random.fold_in(data_key, step), (task.batch_size,),
                                         0, size))
    batch = {name: jnp.asarray(value[rows]) for name, value in data.items()}
    loss, grads = jax.value_and_grad(task.loss)(optimizer.get_params(state), batch)
    state = optimizer.update(state, grads, loss=loss)
    losses.append(float(loss))
  return np.asarray(losses)


def test_mlp_lopt_runs_inside_unf_evaluate(tmp_path):
  steps = 25
  lopt, default_meta = L.lo_learned_optimizer("mlp_lopt")
  assert isinstance(lopt, lo.lopt_base.LearnedOptimizer)
  # Meta-parameters as learned_optimization's outer training stores them.
  trained_meta = jax.tree.map(lambda x: x * 1.5, default_meta)
  checkpoint = lo.gradient_learner.ParameterCheckpoint(params=trained_meta, gen_id="g", step=7)
  (tmp_path / "theta").write_bytes(flax.serialization.to_bytes(checkpoint))
  out = tmp_path / "eval"
  code = evaluate.main(["--task", "tiny_mlp", "--optimizers",
                          f"lo:mlp_lopt,lo:mlp_lopt@{tmp_path / 'theta'},adam",
                          "--steps", str(steps), "--seeds", "2", "--eval-every", "25",
                          "--final-window", "5", "--out", str(out), "--quiet"])
  assert code == 0
  curves = read_csv(out / "curves.csv")
  task = tasks.get_task("tiny_mlp")
  for label, meta in (("lo:mlp_lopt", default_meta), ("lo:mlp_lopt@theta", trained_meta)):
    for seed in (0, 1):
      logged = np.asarray([float(r["train_loss"]) for r in curves
                           if r["optimizer"] == label and r["seed"] == str(seed)])
      np.testing.assert_allclose(logged, _manual_curve(lopt, meta, task, seed, steps),
                                 rtol=2e-4, atol=1e-5)
  summary = json.loads((out / "summary.json").read_text())
  finals = {row["optimizer"]: row["final_train_loss"] for row in summary["rows"]}
  assert finals["lo:mlp_lopt"] != finals["lo:mlp_lopt@theta"]


def test_bad_lo_optimizer_entries_are_reported(tmp_path, capsys):
  common = ["--task", "tiny_mlp", "--steps", "2", "--final-window", "1", "--seeds", "1",
            "--out", str(tmp_path), "--quiet"]
  with pytest.raises(SystemExit) as exit:
    evaluate.main(["--optimizers", "lo:no_such_lopt", *common])
  assert exit.value.code == 2 and "mlp_lopt" in capsys.readouterr().err
  (tmp_path / "junk").write_bytes(b"not msgpack")
  with pytest.raises(SystemExit) as exit:
    evaluate.main(["--optimizers", f"lo:mlp_lopt@{tmp_path / 'junk'}", *common])
  assert exit.value.code == 2 and "does not hold meta-parameters" in capsys.readouterr().err
