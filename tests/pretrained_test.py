"""The optimizers shipped in the package load and train their task with finite updates."""

import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import unf_lopt as U
from unf_lopt import checkpoint, shipped, tasks
from unf_lopt.evaluate import evaluation

# `unf_lopt.pretrained` is also the name of a function in unf_lopt's namespace.
pretrained_module = importlib.import_module("unf_lopt.pretrained")

MLP_SHIPPED = ("unf_mlp_fmnist", "deepset_mlp_fmnist", "nfn_mlp_fmnist", "sgdm_mlp_fmnist")
SHIPPED = (*MLP_SHIPPED, "unf_rnn_lm1b", "deepset_rnn_lm1b", "sgdm_rnn_lm1b",
           "unf_cnn_fmnist_standin", "nfn_cnn_fmnist_standin", "sgdm_cnn_fmnist_standin",
           "unf_paper_spec_cnn_fmnist_standin", "deepset_cnn_fmnist_standin",
           "unf_transformer_lm1b", "sgdm_transformer_lm1b")


def test_exactly_the_reproduction_optimizers_are_listed_and_each_loads():
  assert U.available_pretrained() == sorted(SHIPPED)
  for name in SHIPPED:
    lopt, meta = U.pretrained(name)
    assert lopt.update_net == name.split("_")[0] and meta["log_alpha"].shape == ()


def test_only_folders_with_an_optimizer_config_are_listed(tmp_path, monkeypatch):
  for name in ("b_opt", "a_opt", "notes"):
    (tmp_path / name).mkdir()
  for name in ("b_opt", "a_opt"):
    (tmp_path / name / "optimizer.json").write_text("{}")
  (tmp_path / "notes" / "README.md").write_text("not an optimizer")
  monkeypatch.setattr(pretrained_module, "SHIPPED", tmp_path)
  assert U.available_pretrained() == ["a_opt", "b_opt"]
  monkeypatch.setattr(pretrained_module, "SHIPPED", tmp_path / "missing")
  assert U.available_pretrained() == []


def random_batch(task, rng):
  """A batch shaped like the task's: integers (labels, tokens) below ``num_classes``."""
  return {key: (rng.integers(0, task.num_classes, value.shape).astype(value.dtype)
                if np.issubdtype(value.dtype, np.integer)
                else rng.uniform(size=value.shape).astype(value.dtype))
          for key, value in task.dummy_batch().items()}


@pytest.mark.parametrize("name", SHIPPED)
def test_pretrained_optimizer_trains_its_task(name):
  info = U.pretrained_info(name)
  task = tasks.get_task(info["task"], **info["task_options"])
  lopt, meta = evaluation.load_optimizer(f"pretrained:{name}", task)
  assert lopt.update_net == name.split("_")[0]
  batch = random_batch(task, np.random.default_rng(0))
  optimizer = lopt.opt_fn(meta)
  state = optimizer.init(task.init(jax.random.PRNGKey(0)), num_steps=2000)
  update = jax.jit(lambda state: optimizer.update(
      state, jax.grad(task.loss)(optimizer.get_params(state), batch)))
  first = float(task.loss(optimizer.get_params(state), batch))
  for _ in range(20):
    state = update(state)
  params = optimizer.get_params(state)
  assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(params))
  assert int(state.skipped_steps) == 0
  assert float(task.loss(params, batch)) < first  # it fits the (random) batch


@pytest.mark.parametrize("name", SHIPPED)
def test_info_rebuilds_the_training_task_and_fits_the_optimizer(name):
  info = U.pretrained_info(name)
  task = tasks.get_task(info["task"], **info["task_options"])
  assert info["spec"] in ("true", "paper") and info["num_steps"] > 0
  lopt, meta = U.pretrained(name)
  if lopt.update_net != "sgdm":
    # The shipped meta-parameters have exactly the shapes this task's spec asks for.
    params_like = jax.eval_shape(task.init, jax.random.PRNGKey(0))
    rebuilt = U.NominalLOpt(lopt.update_net, spec=task.spec, params_like=params_like,
                            **lopt.options())
    expected = jax.eval_shape(rebuilt.init, jax.random.PRNGKey(0))
    assert jax.tree.map(np.shape, expected) == jax.tree.map(np.shape, meta)


def test_info_names_a_missing_key_and_an_unknown_optimizer(tmp_path, monkeypatch):
  (tmp_path / "x_opt").mkdir()
  (tmp_path / "x_opt" / "optimizer.json").write_text("{}")
  (tmp_path / "x_opt" / "info.json").write_text('{"task": "mlp_fmnist", "spec": "true"}')
  monkeypatch.setattr(pretrained_module, "SHIPPED", tmp_path)
  with pytest.raises(ValueError, match="task_options, num_steps"):
    U.pretrained_info("x_opt")
  with pytest.raises(KeyError, match="x_opt"):
    U.pretrained_info("y_opt")


def sequential_mlp(widths, inputs):
  layers = []
  for width in widths[:-1]:
    layers += [nn.Dense(width), nn.relu]
  model = nn.Sequential([*layers, nn.Dense(widths[-1])])
  x = jax.random.normal(jax.random.PRNGKey(0), (64, inputs))
  labels = jnp.arange(64) % widths[-1]
  params = model.init(jax.random.PRNGKey(1), x)["params"]
  loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(
      model.apply({"params": p}, x), labels).mean()
  return params, loss_fn


def train_with(name, params, loss_fn, steps=15):
  tx = optax.chain(optax.clip_by_global_norm(1.0), U.as_optax(*U.pretrained(name)))
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params, value=loss)
    return optax.apply_updates(params, updates), state

  for _ in range(steps):
    params, state = step(params, state)
  return params


@pytest.mark.parametrize("name", MLP_SHIPPED)
@pytest.mark.parametrize("widths,inputs", [((32, 10), 64), ((20, 7), 50)])
def test_shipped_optimizers_train_renamed_and_rewidened_mlps(name, widths, inputs):
  # nn.Sequential names its layers layers_0 and layers_2, not the Dense_0/Dense_1 trained on.
  params, loss_fn = sequential_mlp(widths, inputs)
  assert sorted(params) == ["layers_0", "layers_2"]
  trained = train_with(name, params, loss_fn)
  assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(trained))
  assert float(loss_fn(trained)) < 0.8 * float(loss_fn(params))


@pytest.mark.parametrize("name", MLP_SHIPPED)
def test_a_deeper_mlp_is_refused_by_unf_and_nfn_only(name):
  params, loss_fn = sequential_mlp((24, 16, 10), 30)
  if name.startswith(("unf", "nfn")):
    with pytest.raises(U.SpecError, match=r"another structure.*6 vs 4.*deepset_mlp_fmnist"):
      U.as_optax(*U.pretrained(name)).init(params)
  else:  # deepset and sgdm fit any model
    trained = train_with(name, params, loss_fn)
    assert float(loss_fn(trained)) < float(loss_fn(params))


def test_shipped_names_read_the_checkpoint_config_file():
  assert shipped.CHECKPOINT_CONFIG_FILE == checkpoint.CONFIG_FILE
  assert U.available_pretrained() == shipped.shipped_names()
  assert set(SHIPPED) <= set(shipped.shipped_names())
