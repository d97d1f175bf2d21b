"""Tests for as_optax: optax composition, flax TrainState, skipping, state structure."""

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


def learned_transform(params, kind="unf"):
  lopt = U.NominalLOpt(kind, spec="infer", params_like=params)
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
  lopt = U.NominalLOpt("unf", spec="infer", params_like=params)
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
