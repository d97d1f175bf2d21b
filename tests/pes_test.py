"""PES against independent computations: antithetic ES, autodiff through the unroll."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import unf_lopt as U
from unf_lopt.meta_train.inner import InnerProblem
from unf_lopt.meta_train.pes import PESConfig, TruncatedPES, perturbation, run_keys

CURVATURE = jnp.asarray([0.5, 1.0, 2.0])
TARGET = jnp.asarray([1.0, -1.0, 0.5])
START = jnp.asarray([2.0, 1.0, -1.0])


def quadratic(random_init=False):
  """0.5 * sum(a * (w - b)^2); batches add a small random shift to the target."""
  init = (lambda key: {"w": jax.random.normal(key, (3,))}) if random_init else \
         (lambda key: {"w": START})

  def loss(params, batch):
    return 0.5 * jnp.sum(CURVATURE * (params["w"] - TARGET - batch["shift"]) ** 2)

  def sample_batch(data, key):
    return {"shift": data["scale"] * jax.random.normal(key, (3,))}

  return InnerProblem("quadratic", init=init, loss=loss, sample_batch=sample_batch,
                      data={"scale": jnp.float32(0.1)})


def unrolled_losses(lopt, meta, problem, init_key, data_keys, horizon, num_steps):
  """Training losses of one inner run, step by step, with a plain Python loop."""
  optimizer = lopt.opt_fn(meta)
  state = optimizer.init(problem.init(init_key), num_steps=num_steps)
  losses = []
  for step in range(horizon):
    batch = problem.sample_batch(problem.data, data_keys(step))
    loss, grads = jax.value_and_grad(problem.loss)(optimizer.get_params(state), batch)
    state = optimizer.update(state, grads, loss=loss)
    losses.append(loss)
  return jnp.stack(losses)


@pytest.mark.parametrize("meta_loss", ["mean", "final"])
def test_one_truncation_per_horizon_is_antithetic_es(meta_loss):
  problem = quadratic(random_init=True)
  lopt = U.NominalLOpt("sgdm")
  config = PESConfig(num_runs=4, trunc_length=6, horizon=6, sigma=0.05, random_offset=False,
                     meta_loss=meta_loss)
  reduce = (lambda losses: losses.mean()) if meta_loss == "mean" else (lambda losses: losses[-1])
  pes = TruncatedPES(lopt, problem, config)
  meta = lopt.init(jax.random.PRNGKey(0))
  init_key, step_key = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
  state = pes.init_state(meta, init_key)
  gradient, _, metrics = pes.estimate(meta, state, step_key)
  # Independent: antithetic ES with the same perturbations, inits and batches.
  run_init_keys = jax.random.split(jax.random.split(init_key)[0], 4)
  noise_keys, data_keys, _ = run_keys(step_key, 4)
  expected, meta_losses = [], []
  for run in range(4):
    eps = perturbation(meta, noise_keys[run], config.sigma)
    signed = [jax.tree.map(lambda m, e, s=s: m + s * e, meta, eps) for s in (1, -1)]
    plus, minus = (unrolled_losses(lopt, m, problem, run_init_keys[run],
                                   lambda i, r=run: jax.random.fold_in(data_keys[r], i), 6, 6
                                   ) for m in signed)
    plus, minus = reduce(plus), reduce(minus)
    expected.append(jax.tree.map(lambda e, p=plus, n=minus: e * (p - n) / (2 * 0.05 ** 2), eps))
    meta_losses.append((plus + minus) / 2)
  expected = jax.tree.map(lambda *g: jnp.mean(jnp.stack(g), 0), *expected)
  for name in gradient:
    np.testing.assert_allclose(gradient[name], expected[name], rtol=1e-4, atol=1e-6)
  assert float(metrics["meta_loss"]) == pytest.approx(float(np.mean(meta_losses)), rel=1e-5)
  assert int(metrics["resets"]) == 4  # every run finished its episode


def test_pes_is_unbiased_for_the_gradient_of_the_whole_unroll():
  problem = quadratic()
  lopt = U.NominalLOpt("sgdm")
  horizon, trunc = 12, 3
  meta = {"log_alpha": jnp.float32(np.log(0.3)), "logit_g0": jnp.float32(0.5)}
  config = PESConfig(num_runs=256, trunc_length=trunc, horizon=horizon, sigma=0.01,
                     random_offset=False)
  pes = TruncatedPES(lopt, problem, config)
  # Each repeat estimates over one whole episode: the sum of its truncations' estimates.
  samples = []
  for repeat in range(24):
    state = pes.init_state(meta, jax.random.PRNGKey(repeat))
    total = jax.tree.map(jnp.zeros_like, meta)
    for index in range(horizon // trunc):
      gradient, state, _ = pes.estimate(meta, state, jax.random.PRNGKey(1000 * repeat + index))
      total = jax.tree.map(jnp.add, total, gradient)
    samples.append(total)
  # Independent: autodiff through the whole unroll. Batches are random, so the
  # target is the expected objective; average autodiff over many data streams.
  def objective(meta, stream):
    losses = unrolled_losses(lopt, meta, problem, None,
                             lambda i: jax.random.fold_in(stream, i), horizon, horizon)
    return losses.reshape(horizon // trunc, trunc).mean(1).sum()

  streams = jax.random.split(jax.random.PRNGKey(99), 512)
  true_gradient = jax.vmap(jax.grad(objective), in_axes=(None, 0))(meta, streams)
  for name in meta:
    estimates = np.asarray([s[name] for s in samples])
    truth = float(np.mean(true_gradient[name]))
    truth_error = float(np.std(true_gradient[name]) / np.sqrt(len(streams)))
    error = estimates.std(ddof=1) / np.sqrt(len(estimates))
    assert abs(estimates.mean() - truth) < 4 * np.hypot(error, truth_error) + 1e-3 * abs(truth), \
        (name, estimates.mean(), truth, error)
    assert error < 0.2 * abs(truth)  # the check above is informative


def test_blown_up_runs_are_excluded_counted_and_reset():
  def loss(params, batch):
    del batch
    w = params["w"]
    return jnp.sum(w ** 2) + jnp.where(w[0] > 0.5, jnp.nan, 0.0)

  problem = InnerProblem("exploding", init=lambda key: {"w": jax.random.normal(key, (3,))},
                         loss=loss, sample_batch=lambda data, key: {})
  lopt = U.NominalLOpt("sgdm")
  pes = TruncatedPES(lopt, problem, PESConfig(num_runs=16, trunc_length=4, horizon=40,
                                              random_offset=False))
  meta = lopt.init(jax.random.PRNGKey(0))
  state = pes.init_state(meta, jax.random.PRNGKey(3))
  bad = np.asarray(state.particles.params["w"][:, 0, 0] > 0.5)
  assert 0 < bad.sum() < 16
  gradient, next_state, metrics = pes.estimate(meta, state, jax.random.PRNGKey(4))
  assert int(metrics["blowups"]) == bad.sum()
  assert np.isfinite(float(metrics["meta_loss"]))
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(gradient))
  np.testing.assert_array_equal(np.asarray(next_state.episodes) - np.asarray(state.episodes),
                                bad.astype(int))
  for leaf in jax.tree.leaves(next_state.accumulator):
    assert (np.asarray(leaf)[bad] == 0).all() and (np.asarray(leaf)[~bad] != 0).all()


def test_random_offsets_desynchronise_runs_and_episodes_reset_at_the_horizon():
  problem = quadratic(random_init=True)
  lopt = U.NominalLOpt("sgdm")
  config = PESConfig(num_runs=16, trunc_length=5, horizon=22)  # rounded up to 25
  pes = TruncatedPES(lopt, problem, config)
  meta = lopt.init(jax.random.PRNGKey(0))
  state = pes.init_state(meta, jax.random.PRNGKey(1))
  steps_left = np.asarray(state.steps_left)
  assert set(steps_left) <= {5, 10, 15, 20, 25} and len(set(steps_left)) > 1
  resets = 0
  for index in range(5):
    _, state, metrics = pes.estimate(meta, state, jax.random.PRNGKey(index))
    resets += int(metrics["resets"])
  assert resets == 16  # every run ends its (first) episode within 25 steps exactly once
  assert (np.asarray(state.particles.step[:, 0]) == 25 - np.asarray(state.steps_left)).all()


EIGHT_DEVICES = textwrap.dedent("""
    import jax, numpy as np
    import unf_lopt as U
    from unf_lopt import tasks
    from unf_lopt.meta_train.inner import InnerProblem
    from unf_lopt.meta_train.pes import PESConfig, TruncatedPES, run_mesh
    assert len(jax.devices()) == 8, jax.devices()
    task = tasks.get_task("tiny_mlp")
    problem = InnerProblem.from_task(task)
    params = task.init(jax.random.PRNGKey(0))
    lopt = U.NominalLOpt("unf", spec=task.spec, params_like=params)
    meta = lopt.init(jax.random.PRNGKey(0))
    config = PESConfig(num_runs=8, trunc_length=3, horizon=6)
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
      pes = TruncatedPES(lopt, problem, config, mesh=run_mesh(devices))
      state = pes.init_state(meta, jax.random.PRNGKey(1))
      grads = []
      for step in range(3):
        gradient, state, metrics = pes.estimate(meta, state, jax.random.PRNGKey(10 + step))
        grads.append(gradient)
      assert len(state.steps_left.sharding.device_set) == len(devices)
      results.append(jax.tree.map(np.asarray, (grads, state.particles.params, metrics)))
    one, eight = results
    # Inner runs agree to float rounding (XLA tiles a batch of 8 runs on one
    # device differently from 1 run per device). The ES gradient divides loss
    # differences by 2 sigma^2 = 2e-4, which magnifies that rounding, so its
    # tolerance is relative to the gradient's scale: a wrong cross-device mean
    # or a dropped run is off by O(1) of it.
    np.testing.assert_allclose(one[2]["meta_loss"], eight[2]["meta_loss"], rtol=1e-6)
    assert one[2]["resets"] == eight[2]["resets"] and one[2]["blowups"] == eight[2]["blowups"]
    for a, b in zip(jax.tree.leaves(one[1]), jax.tree.leaves(eight[1])):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for g1, g8 in zip(one[0], eight[0]):
      scale = max(np.abs(a).max() for a in jax.tree.leaves(g1))
      for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g8)):
        np.testing.assert_allclose(a, b, atol=2e-3 * scale)
    print("EQUAL", sum(x.size for x in jax.tree.leaves(one)))
""")


@pytest.mark.slow
def test_eight_devices_give_the_one_device_result():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", EIGHT_DEVICES], env=env, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "EQUAL" in result.stdout


def test_memory_plan_of_an_estimate_grows_with_the_runs_not_the_horizon():
  from unf_lopt.meta_train.config import MetaTrainConfig
  from unf_lopt.meta_train.trainer import MetaTrainer

  def peak(trunc_length, horizon, num_runs=2):
    trainer = MetaTrainer(MetaTrainConfig(task="tiny_mlp", update_net="unf", num_runs=num_runs,
                                          trunc_length=trunc_length, horizon=horizon),
                          None, quiet=True)
    state = trainer.initial_state()
    sizes = trainer.pes.estimate_memory(state.meta_params, state.pes_state,
                                        jax.random.PRNGKey(0))
    assert sizes["peak"] == (sizes["arguments"] + sizes["outputs"] + sizes["temporaries"]
                             - sizes["aliased"])
    return sizes

  short = peak(4, 20)
  assert peak(4, 200_000) == short
  # The truncation is a scan (batches drawn inside it): its length costs about nothing.
  assert peak(16, 20)["temporaries"] < 1.01 * short["temporaries"]
  # Every run holds its particles' states: more runs, more memory.
  assert peak(4, 20, num_runs=8)["arguments"] > short["arguments"]
