"""Tests for the nominal-term learned optimizer: SGDM limit, equivariance, counts, NaN skips."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import unf_lopt as U
import weight_spaces
from unf_lopt.permutations import permute, sample_permutations


def count(tree):
  return sum(np.size(leaf) for leaf in jax.tree.leaves(tree))


def random_like(params, seed):
  """Standard normal entries in the shapes of ``params`` (numpy: eager jax.random compiles
  once per shape)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=np.shape(p)), jnp.float32), params)


def rnn_lm_spec_and_params():
  """The RNN-LM weight space of the UNF paper (Zhou et al. 2024), Table 3."""
  shapes = {"embed": (259, 32), "w_ih": (32, 64), "b_ih": (64,), "w_hh": (64, 64), "b_hh": (64,),
            "initial_state": (1, 64), "head": (64, 259), "head_bias": (259,)}
  spec = {"embed": ("vocab", "e"), "w_ih": ("e", "h"), "b_ih": ("h",), "w_hh": ("h", "h"),
          "b_hh": ("h",), "initial_state": ("state", "h"), "head": ("h", "vocab"),
          "head_bias": ("vocab",)}
  return {k: jnp.zeros(s) for k, s in shapes.items()}, spec


def meta_param_count(update_net, **options):
  """Meta-parameter count, from shapes alone: an eager init compiles every operation."""
  lopt = U.NominalLOpt(update_net, **options)
  return count(jax.eval_shape(lopt.init, jax.random.PRNGKey(0)))


def test_parameter_counts_reproduce_table_3():
  params, spec = weight_spaces.mlp((64, 32, 10))
  assert meta_param_count("deepset") == 2_788
  assert meta_param_count("unf", spec=spec, params_like=params) == 3_783
  assert meta_param_count("nfn", spec=spec, params_like=params) == 3_783
  rnn_params, rnn_spec = rnn_lm_spec_and_params()
  assert meta_param_count("unf", spec=rnn_spec, params_like=rnn_params) == 8_043
  assert meta_param_count("deepset", spec=rnn_spec, params_like=rnn_params) == 2_788


@pytest.mark.parametrize("kind", ["sgdm", "unf"])
def test_beta_zero_is_sgd_with_momentum(kind):
  params, spec = weight_spaces.mlp((5, 4, 3))
  params = random_like(params, 0)
  lopt = U.NominalLOpt(kind, spec=spec, params_like=params)
  meta = jax.jit(lopt.init)(jax.random.PRNGKey(1))
  if kind == "unf":
    meta = dict(meta, log_beta=jnp.float32(-jnp.inf))
  opt = lopt.opt_fn(meta)
  state = opt.init(params, num_steps=20)
  reference = optax.sgd(learning_rate=0.1, momentum=0.9)
  reference_params, reference_state = params, reference.init(params)
  update = jax.jit(opt.update)
  for step in range(20):
    grads = random_like(params, 100 + step)
    state = update(state, grads, loss=jnp.float32(1.0))
    updates, reference_state = reference.update(grads, reference_state, reference_params)
    reference_params = optax.apply_updates(reference_params, updates)
    for a, b in zip(jax.tree.leaves(opt.get_params(state)), jax.tree.leaves(reference_params)):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


SPACES = {**weight_spaces.ALL, "transformer_2_blocks": lambda: weight_spaces.transformer(blocks=2)}
CASES = [("unf", "mlp"), ("nfn", "mlp"), ("unf", "cnn"), ("nfn", "cnn_fixed"), ("unf", "rnn"),
         ("unf", "transformer"),
         # Compiling the UNF step of two blocks takes four times as long as of one.
         pytest.param("unf", "transformer_2_blocks", marks=pytest.mark.slow)]


@pytest.mark.parametrize("kind,space", CASES)
def test_optimizer_step_is_equivariant(kind, space):
  params, spec = SPACES[space]()
  params = random_like(params, 0)
  lopt = U.NominalLOpt(kind, spec=spec, params_like=params)
  meta = dict(jax.jit(lopt.init)(jax.random.PRNGKey(1)), log_beta=jnp.float32(0.0))  # beta = 1
  opt = lopt.opt_fn(meta)
  group_spec = spec
  if kind == "nfn":  # NP permutes neurons only; filter taps are channels
    group_spec = jax.tree.map(lambda a: (*[None] * (len(a) - 2), *a[-2:]) if len(a) > 2 else a,
                              spec, is_leaf=lambda n: isinstance(n, tuple))
  perms = sample_permutations(np.random.default_rng(2), group_spec, params)
  move = lambda tree: permute(tree, group_spec, perms)
  update, init = jax.jit(opt.update), jax.jit(opt.init)
  state, moved_state = init(params), init(move(params))
  for step in range(2):
    grads = random_like(params, 10 + step)
    state = update(state, grads, loss=jnp.float32(1.0))
    moved_state = update(moved_state, move(grads), loss=jnp.float32(1.0))
  expected = move(opt.get_params(state))
  for a, b in zip(jax.tree.leaves(opt.get_params(moved_state)), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, atol=1e-5)
  # and the learned term matters: with beta = 1 the step differs from SGDM
  sgdm = U.NominalLOpt("sgdm").opt_fn(U.NominalLOpt("sgdm").init(jax.random.PRNGKey(0)))
  sgdm_state, sgdm_update = sgdm.init(params), jax.jit(sgdm.update)
  for step in range(2):
    sgdm_state = sgdm_update(sgdm_state, random_like(params, 10 + step))
  assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree.leaves(sgdm.get_params(sgdm_state)), jax.tree.leaves(opt.get_params(state)))) > 1e-3


def test_deepset_step_is_equivariant_to_any_entry_permutation():
  params = random_like({"w": jnp.zeros((4, 3)), "b": jnp.zeros(3)}, 0)
  lopt = U.NominalLOpt("deepset")
  opt = lopt.opt_fn(dict(lopt.init(jax.random.PRNGKey(1)), log_beta=jnp.float32(0.0)))
  rng = np.random.default_rng(0)
  orders = {k: rng.permutation(np.size(v)) for k, v in params.items()}
  move = lambda tree: {k: v.reshape(-1)[orders[k]].reshape(v.shape) for k, v in tree.items()}
  grads = random_like(params, 3)
  a = opt.get_params(opt.update(opt.init(move(params)), move(grads)))
  b = move(opt.get_params(opt.update(opt.init(params), grads)))
  for k in params:
    np.testing.assert_allclose(a[k], b[k], atol=1e-6)


@pytest.mark.parametrize("kind", ["unf", "sgdm", "adam"])
def test_non_finite_steps_are_skipped_and_counted(kind):
  params, spec = weight_spaces.mlp()
  params = random_like(params, 0)
  lopt = U.NominalLOpt(kind, spec=spec, params_like=params)
  opt = lopt.opt_fn(lopt.init(jax.random.PRNGKey(0)))
  update = jax.jit(opt.update)
  state = update(opt.init(params), random_like(params, 1), loss=jnp.float32(2.0))
  bad_grads = jax.tree.map(lambda g: g.at[(0,) * g.ndim].set(jnp.nan), random_like(params, 2))
  skipped = update(state, bad_grads, loss=jnp.float32(2.0))
  skipped = update(skipped, random_like(params, 2), loss=jnp.float32(jnp.inf))
  assert int(skipped.skipped_steps) == 2 and int(skipped.step) == int(state.step) == 1
  unchanged = state.replace(skipped_steps=skipped.skipped_steps)
  for a, b in zip(jax.tree.leaves(skipped), jax.tree.leaves(unchanged)):
    np.testing.assert_array_equal(a, b)
  recovered = update(skipped, random_like(params, 3), loss=jnp.float32(1.0))
  assert int(recovered.step) == 2
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(recovered))


def test_under_vmap_each_run_skips_only_its_own_non_finite_step():
  # PES maps the update over runs: the skip becomes a per-run select.
  params, spec = weight_spaces.mlp()
  params = random_like(params, 0)
  lopt = U.NominalLOpt("unf", spec=spec, params_like=params)
  opt = lopt.opt_fn(lopt.init(jax.random.PRNGKey(0)))
  state = opt.init(params)
  states = jax.tree.map(lambda x: jnp.stack([x, x]), state)
  good = random_like(params, 1)
  bad = jax.tree.map(lambda g: g.at[(0,) * g.ndim].set(jnp.nan), good)
  grads = jax.tree.map(lambda g, b: jnp.stack([g, b]), good, bad)
  stepped = jax.jit(jax.vmap(opt.update))(states, grads)
  alone = jax.jit(opt.update)(state, good)
  assert stepped.skipped_steps.tolist() == [0, 1] and stepped.step.tolist() == [1, 0]
  for batch, advanced, initial in zip(jax.tree.leaves(stepped), jax.tree.leaves(alone),
                                      jax.tree.leaves(state)):
    np.testing.assert_allclose(batch[0], advanced, rtol=1e-6, atol=1e-7)
    if np.shape(initial) == np.shape(batch[1]) and batch.dtype != jnp.int32:
      np.testing.assert_array_equal(batch[1], initial)


@pytest.mark.parametrize("kind", ["unf", "deepset"])
def test_the_constant_folding_barrier_does_not_change_the_step(kind, monkeypatch):
  params, spec = weight_spaces.mlp()
  params, grads = random_like(params, 0), random_like(params, 1)
  lopt = U.NominalLOpt(kind, spec=spec, params_like=params)
  meta = dict(lopt.init(jax.random.PRNGKey(0)), log_beta=jnp.float32(0.0))  # beta = 1
  steps = []
  for threshold in (0, 10**12):  # barrier on every model, on none
    monkeypatch.setattr(U.optimizer, "CONSTANT_FOLDING_BARRIER_ENTRIES", threshold)
    opt = lopt.opt_fn(meta)  # meta-parameters closed over: constants in the jit
    steps.append(jax.jit(opt.update)(opt.init(params), grads).params)
  for with_barrier, without in zip(jax.tree.leaves(steps[0]), jax.tree.leaves(steps[1])):
    np.testing.assert_allclose(with_barrier, without, rtol=1e-6, atol=1e-7)
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(steps[0]),
                                                   jax.tree.leaves(params)))


def test_spec_as_callable_or_inferred_steps_like_the_explicit_spec():
  params, spec = weight_spaces.mlp()
  params, grads = random_like(params, 0), random_like(params, 1)
  explicit = U.NominalLOpt("unf", spec=spec, params_like=params)
  meta = dict(explicit.init(jax.random.PRNGKey(0)), log_beta=jnp.float32(0.0))  # beta = 1

  def stepped(lopt, meta=meta):
    opt = lopt.opt_fn(meta)
    return opt.get_params(opt.update(opt.init(params), grads))

  def assert_same(got, expected):
    assert jax.tree.structure(got) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)

  assert_same(stepped(U.NominalLOpt("unf", spec=U.mlp_spec, params_like=params)),
              stepped(explicit))
  # Inferred from the model (inputs and outputs fixed): steps like the fixed-io builder's spec.
  def apply_fn(p, x):
    return jnp.tanh(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]) @ p["Dense_1"]["kernel"] \
        + p["Dense_1"]["bias"]

  inferred = U.NominalLOpt("unf", spec="infer", params_like=params, apply_fn=apply_fn,
                           example_args=(jnp.ones((2, 5)),))
  fixed_io = U.NominalLOpt("unf", spec=U.mlp_spec(params, fixed_input=True, fixed_output=True),
                           params_like=params)
  fixed_meta = dict(fixed_io.init(jax.random.PRNGKey(0)), log_beta=jnp.float32(0.0))
  assert_same(stepped(inferred, fixed_meta), stepped(fixed_io, fixed_meta))
  with pytest.raises((ValueError, U.SpecError), match="apply_fn"):
    stepped(U.NominalLOpt("unf", spec="infer", params_like=params))


def test_bad_configuration_errors():
  with pytest.raises(ValueError, match="unknown update_net"):
    U.NominalLOpt("lion")
  with pytest.raises(ValueError, match="needs the weight-space spec"):
    U.NominalLOpt("unf")
  params, spec = weight_spaces.mlp()
  with pytest.raises(ValueError, match="params_like"):
    U.NominalLOpt("nfn", spec=spec).init(jax.random.PRNGKey(0))


def test_all_finite_finds_any_non_finite_entry():
  tree = {"a": jnp.ones((3, 2)), "b": jnp.zeros((0,)), "c": jnp.ones(4, jnp.bfloat16)}
  assert bool(U.optimizer.all_finite(tree, None))
  assert bool(U.optimizer.all_finite(tree, jnp.float32(1.0)))
  assert not bool(U.optimizer.all_finite(tree, jnp.float32(jnp.nan)))
  for name, index in (("a", (2, 1)), ("c", (0,))):
    for bad in (jnp.nan, jnp.inf, -jnp.inf):
      broken = dict(tree, **{name: tree[name].at[index].set(bad)})
      assert not bool(jax.jit(U.optimizer.all_finite, static_argnums=1)(broken, None)), (name, bad)
  assert bool(U.optimizer.all_finite({}, None))
