"""Weight-space predictors: invariance to the spec's permutations; Kendall's tau against scipy."""

import jax
import numpy as np
import pytest
import scipy.stats

from unf_lopt.evaluate.experiments import fitting, predictors
from unf_lopt.tasks.zoo import addition
from unf_lopt.permutations import permute, sample_permutations


def zoo_model_params(seed=0):
  model = addition.Seq2SeqGRU(hidden=5, embed_dim=4)
  inputs, targets = addition.sample_problems(jax.random.PRNGKey(seed), 2)
  params = model.init(jax.random.PRNGKey(seed), inputs, targets)["params"]
  return jax.tree.map(lambda p: p + 0.5 * jax.random.normal(jax.random.PRNGKey(seed + 1), p.shape),
                      params)


@pytest.mark.parametrize("kind", ["unf", "deepset", "statnn"])
def test_predictors_are_invariant_to_spec_permutations(kind):
  params, spec = zoo_model_params(), addition.spec()
  if kind == "statnn":
    net = predictors.StatNN(mlp=(16, 16))
  else:
    net = predictors.InvariantPredictor(spec, layer=kind, channels=4, depth=2, mlp=(16,))
  variables = jax.jit(net.init)(jax.random.PRNGKey(0), params)
  predict = jax.jit(net.apply)  # eagerly, every operation would compile on its own
  value = float(predict(variables, params))
  rng = np.random.default_rng(0)
  for _ in range(3):
    permuted = permute(params, spec, sample_permutations(rng, spec, params))
    assert float(predict(variables, permuted)) == pytest.approx(value, rel=1e-4, abs=1e-5)
  # A change that is not a permutation changes the prediction (the check is not vacuous).
  changed = jax.tree.map(lambda p: p * 1.5, params)
  assert abs(float(predict(variables, changed)) - value) > 1e-4


def test_kendall_tau_matches_scipy():
  rng = np.random.default_rng(0)
  for size in (5, 50, 300):
    x = rng.normal(size=size)
    y = 0.5 * x + rng.normal(size=size)
    assert fitting.kendall_tau(x, y) == pytest.approx(scipy.stats.kendalltau(x, y)[0], abs=1e-12)
    ties_x, ties_y = np.round(x), rng.integers(0, 3, size)  # tau-b with ties
    assert fitting.kendall_tau(ties_x, ties_y) == pytest.approx(
        scipy.stats.kendalltau(ties_x, ties_y)[0], abs=1e-12)
  with pytest.raises(ValueError):
    fitting.kendall_tau(np.zeros(3), np.zeros(4))


@pytest.mark.slow
def test_fit_predictor_learns_a_weight_statistic_and_stops_early():
  # Targets that are a known function of the weights: a sigmoid of the head's mean.
  stacked = jax.vmap(lambda seed: zoo_model_params(seed))(np.arange(120))
  head_mean = np.asarray(stacked["head"]["kernel"]).reshape(120, -1).mean(1)
  targets = 1 / (1 + np.exp(-8 * (head_mean - head_mean.mean()) / head_mean.std()))
  split = np.repeat([0, 1, 2], [80, 20, 20])
  net = predictors.statnn_for(jax.tree.map(lambda w: w[:80], stacked), mlp=(32, 32))
  result = predictors.fit_predictor(net, stacked, targets, split,
                                    epochs=15, batch_size=10, learning_rate=3e-3)
  assert result["test_tau"] > 0.35, result  # 0.58 here; chance is 0 +- 0.16
  assert 1 <= result["best_epoch"] <= 15 and len(result["history"]) == 15
  best = min(h["valid_loss"] for h in result["history"])
  assert result["history"][result["best_epoch"] - 1]["valid_loss"] == best


@pytest.mark.slow
def test_predict_generalization_command_on_a_synthetic_zoo(tmp_path, capsys):
  from unf_lopt.evaluate.commands import predict_generalization  # pylint: disable=g-import-not-at-top
  stacked = jax.vmap(lambda seed: zoo_model_params(seed))(np.arange(30))
  flat = {f"params/{'/'.join(str(k.key) for k in path)}": np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(stacked)}
  rates = np.linspace(0, 1, 30).astype(np.float32)
  split = np.repeat([0, 1, 2], [20, 5, 5]).astype(np.int8)
  np.savez(tmp_path / "zoo.npz", success_rate=rates, split=split,
           learning_rate=np.full(30, 1e-3, np.float32), batch_size=np.full(30, 64), **flat)
  code = predict_generalization.main(["--zoo", str(tmp_path / "zoo.npz"), "--predictor", "deepset",
                                      "--seeds", "2", "--epochs", "2", "--channels", "4",
                                      "--mlp-width", "8", "--out", str(tmp_path / "out")])
  assert code == 0
  assert "deepset: Kendall tau" in capsys.readouterr().out
  import json  # pylint: disable=g-import-not-at-top
  result = json.loads((tmp_path / "out" / "result.json").read_text())
  assert len(result["taus"]) == 2 and result["mean"] == pytest.approx(np.mean(result["taus"]))
  with pytest.raises(SystemExit) as exit:
    predict_generalization.main(["--zoo", str(tmp_path / "none.npz"), "--predictor", "unf"])
  assert exit.value.code == 2


def test_fit_refuses_splits_it_cannot_train_on():
  weights = {"w": np.zeros((6, 2), np.float32)}
  net = predictors.FlatMLP((4,))
  with pytest.raises(ValueError, match="every split needs networks"):
    fitting.fit(net, weights, np.zeros(6), np.zeros(6, int), fitting.binary_objective())
  with pytest.raises(ValueError, match="batch_size <= 2 training networks"):
    fitting.fit(net, weights, np.zeros(6), np.asarray([0, 0, 1, 1, 2, 2]),
                fitting.binary_objective(), batch_size=3)
  with pytest.raises(ValueError, match="disagree"):
    fitting.fit(net, weights, np.zeros(5), np.asarray([0, 0, 1, 1, 2]), fitting.binary_objective())
