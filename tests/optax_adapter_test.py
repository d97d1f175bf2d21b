"""Tests for as_optax: optax composition, flax TrainState, skipping, state structure."""

import importlib
import sys
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state

import unf_lopt as U


class MLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(1)(nn.relu(nn.Dense(8)(x)))


def regression():
  x = jax.random.normal(jax.random.PRNGKey(0), (64, 4))
  y = jnp.sin(x.sum(axis=1, keepdims=True))
  model = MLP()
  params = model.init(jax.random.PRNGKey(1), x)["params"]
  loss_fn = lambda p: jnp.mean((model.apply({"params": p}, x) - y) ** 2)
  return model, params, loss_fn


def inferred_lopt(kind, params):
  """``NominalLOpt(kind)`` with the spec inferred from the regression MLP (and verified).

  ``nfn`` gets the paper's spec by hand (its layer has no fixed output bias), unverified:
  permuting the data axes is not an invariance.
  """
  if kind == "nfn":  # MLP builds Dense(1) first in its expression: Dense_0 is the output layer
    spec = {"Dense_1": U.dense_spec("x", "h"), "Dense_0": U.dense_spec("h", "y")}
    return U.NominalLOpt(kind, spec=spec, params_like=params)
  x = jax.random.normal(jax.random.PRNGKey(0), (64, 4))
  return U.NominalLOpt(kind, spec="infer", params_like=params, example_args=(x,),
                       apply_fn=lambda p, x: MLP().apply({"params": p}, x))


def learned_transform(params, kind="unf"):
  lopt = inferred_lopt(kind, params)
  return U.as_optax(lopt, lopt.init(jax.random.PRNGKey(2)), num_steps=100)


@pytest.mark.parametrize("kind", ["unf", "nfn", "deepset", "sgdm", "adam"])
def test_chain_with_clipping_trains_a_flax_mlp_under_jit(kind):
  _, params, loss_fn = regression()
  tx = optax.chain(optax.clip_by_global_norm(1.0), learned_transform(params, kind))
  state = tx.init(params)
  structure = jax.tree.structure(state)

  @jax.jit
  def step(params, state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params, value=loss)
    return optax.apply_updates(params, updates), state, loss

  first = loss_fn(params)
  for _ in range(60):
    params, state, _ = step(params, state)
    assert jax.tree.structure(state) == structure
  assert loss_fn(params) < 0.7 * first


def test_flax_train_state_and_multi_steps_and_apply_if_finite():
  model, params, loss_fn = regression()
  tx = optax.MultiSteps(optax.apply_if_finite(learned_transform(params), 3), every_k_schedule=2)
  state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  first = loss_fn(state.params)
  apply = jax.jit(lambda s: s.apply_gradients(grads=jax.grad(loss_fn)(s.params)))
  for _ in range(80):
    state = apply(state)
  assert loss_fn(state.params) < first


def test_non_finite_gradient_gives_zero_updates_and_is_counted():
  _, params, _ = regression()
  tx = learned_transform(params)
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  _, state = tx.update(grads, state, params)
  bad = jax.tree.map(lambda g: g * jnp.nan, grads)
  updates, skipped = tx.update(bad, state, params)
  assert all(float(jnp.max(jnp.abs(u))) == 0.0 for u in jax.tree.leaves(updates))
  assert int(skipped.skipped_steps) == 1 and int(skipped.step) == int(state.step)
  _, skipped = tx.update(grads, skipped, params, value=jnp.float32(jnp.nan))
  assert int(skipped.skipped_steps) == 2


def test_updates_match_the_optimizer_interface():
  _, params, loss_fn = regression()
  lopt = inferred_lopt("unf", params)
  meta = dict(lopt.init(jax.random.PRNGKey(3)), log_beta=jnp.float32(0.0))
  tx, opt = U.as_optax(lopt, meta), lopt.opt_fn(meta)
  tx_state, opt_state, tx_params = tx.init(params), opt.init(params), params
  for _ in range(3):
    grads = jax.grad(loss_fn)(tx_params)
    updates, tx_state = tx.update(grads, tx_state, tx_params)
    tx_params = optax.apply_updates(tx_params, updates)
    opt_state = opt.update(opt_state, grads)
  for a, b in zip(jax.tree.leaves(tx_params), jax.tree.leaves(opt.get_params(opt_state))):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_update_without_params_is_a_clear_error():
  _, params, _ = regression()
  tx = learned_transform(params, "sgdm")
  with pytest.raises(ValueError, match="needs params"):
    tx.update(params, tx.init(params))


def test_works_as_an_nnx_optimizer():
  from flax import nnx
  model = nnx.Linear(4, 2, rngs=nnx.Rngs(0))
  like = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  lopt = U.NominalLOpt("unf", spec={"kernel": ("a", "b"), "bias": ("b",)}, params_like=like)
  tx = U.as_optax(lopt, lopt.init(jax.random.PRNGKey(0)))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x = jnp.ones((3, 4))
  loss_fn = lambda m: jnp.mean(m(x) ** 2)
  first = loss_fn(model)
  for _ in range(20):
    optimizer.update(model, nnx.grad(loss_fn)(model))
  assert loss_fn(model) < 0.5 * first


def sequential_regression(hidden=6, inputs=5):
  model = nn.Sequential([nn.Dense(hidden), nn.relu, nn.Dense(1)])
  x = jax.random.normal(jax.random.PRNGKey(0), (32, inputs))
  params = model.init(jax.random.PRNGKey(1), x)["params"]
  apply_fn = lambda p, x: model.apply({"params": p}, x)
  loss_fn = lambda p: jnp.mean((apply_fn(p, x) - jnp.sin(x[:, :1])) ** 2)
  return params, apply_fn, x, loss_fn


def test_spec_infer_without_an_apply_function_is_a_clear_error():
  with pytest.raises(ValueError, match="pass apply_fn"):
    U.as_optax(*U.pretrained("unf_mlp_fmnist"), spec="infer")


def test_a_given_spec_matches_exactly_and_agrees_with_the_guess():
  params, _, _, loss_fn = sequential_regression()
  grads = jax.grad(loss_fn)(params)
  spec = {"layers_0": U.dense_spec("x", "h"), "layers_2": U.dense_spec("h", "y")}
  exact, guessed = (U.as_optax(*U.pretrained("unf_mlp_fmnist"), **kwargs)
                    for kwargs in ({"spec": spec}, {}))
  a, _ = exact.update(grads, exact.init(params), params)
  b, _ = guessed.update(grads, guessed.init(params), params)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  wrong = {"layers_0": U.dense_spec(None, "h"), "layers_2": U.dense_spec("h", None)}
  with pytest.raises(U.SpecError, match="fixed axes differ"):
    U.as_optax(*U.pretrained("unf_mlp_fmnist"), spec=wrong).init(params)


class StandIns:
  """Records the calls of stand-ins for infer_spec(apply_fn=...) and verify_spec."""

  def __init__(self, monkeypatch):
    self.inferred, self.verified = [], []
    optimizer_module = importlib.import_module("unf_lopt.optimizer")
    monkeypatch.setattr(optimizer_module, "infer_spec", self.infer_spec)
    module = types.ModuleType("unf_lopt.spec_verify")
    module.verify_spec = self.verify_spec
    monkeypatch.setitem(sys.modules, "unf_lopt.spec_verify", module)

  def infer_spec(self, params, apply_fn=None, example_args=(), *, fixed_io=True):
    assert apply_fn is not None and len(example_args) == 1
    self.inferred.append(fixed_io)
    io = (None, None) if fixed_io else ("in", "out")
    return {"layers_0": U.dense_spec(io[0], "hidden"), "layers_2": U.dense_spec("hidden", io[1])}

  def verify_spec(self, fn, params, spec, *example_args):
    self.verified.append((spec, [type(p) for p in jax.tree.leaves(params)]))
    fn(params, *example_args)  # eager: concrete arrays, never tracers


def test_apply_fn_infers_matches_with_permuted_io_and_verifies_once_eagerly(monkeypatch):
  calls = StandIns(monkeypatch)
  params, apply_fn, x, loss_fn = sequential_regression()
  tx = U.as_optax(*U.pretrained("unf_mlp_fmnist"), apply_fn=apply_fn, example_args=(x,))
  state = jax.jit(tx.init)(params)  # params are tracers here: random arrays stand in
  step = jax.jit(lambda p, s: tx.update(jax.grad(loss_fn)(p), s, p))
  first = loss_fn(params)
  for _ in range(20):
    updates, state = step(params, state)
    params = optax.apply_updates(params, updates)
  assert loss_fn(params) < first
  assert sorted(calls.inferred) == [False, True]  # permuted io to match, fixed io verified
  (spec, types_seen), = calls.verified
  assert spec["layers_0"]["kernel"] == (None, "hidden")
  assert all(not issubclass(t, jax.core.Tracer) for t in types_seen)


def test_nominal_lopt_infers_from_apply_fn_and_stores_the_resolved_spec(monkeypatch, tmp_path):
  calls = StandIns(monkeypatch)
  params, apply_fn, x, _ = sequential_regression()
  lopt = U.NominalLOpt("unf", spec="infer", params_like=params, apply_fn=apply_fn,
                       example_args=(x,), hidden=4, depth=1)
  meta = lopt.init(jax.random.PRNGKey(0))
  assert "apply_fn" not in lopt.options()
  opt = lopt.opt_fn(meta)
  opt.update(opt.init(params), jax.tree.map(jnp.ones_like, params))
  assert len(calls.verified) == 1
  U.save_checkpoint(tmp_path / "opt", lopt, meta)
  loaded, _ = U.load_checkpoint(tmp_path / "opt")
  assert loaded.spec["layers_2"]["kernel"] == ("hidden", None)


def test_apply_fn_with_the_real_inference_and_verification():
  pytest.importorskip("unf_lopt.spec_verify")  # written in parallel (issue 14, item 2)
  params, apply_fn, x, loss_fn = sequential_regression()
  tx = U.as_optax(*U.pretrained("unf_mlp_fmnist"), apply_fn=apply_fn, example_args=(x,))
  state = tx.init(params)
  updates, _ = tx.update(jax.grad(loss_fn)(params), state, params)
  assert all(np.isfinite(u).all() for u in jax.tree.leaves(updates))
  swapped = {"layers_0": U.dense_spec(None, "h"), "layers_2": U.dense_spec("o", None)}
  with pytest.raises(U.SpecError):  # not a symmetry: verify_spec names the broken names
    U.as_optax(*U.pretrained("unf_mlp_fmnist"), spec=swapped, apply_fn=apply_fn,
               example_args=(x,)).init(params)
