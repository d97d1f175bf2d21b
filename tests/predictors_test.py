"""Weight-space predictors: invariance to the spec's permutations; Kendall's tau against scipy."""

import jax
import numpy as np
import pytest
import scipy.stats

from evaluate import predictors
from tasks.zoo import addition
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
  variables = net.init(jax.random.PRNGKey(0), params)
  value = float(net.apply(variables, params))
  rng = np.random.default_rng(0)
  for _ in range(3):
    permuted = permute(params, spec, sample_permutations(rng, spec, params))
    assert float(net.apply(variables, permuted)) == pytest.approx(value, rel=1e-4, abs=1e-5)
  # A change that is not a permutation changes the prediction (the check is not vacuous).
  changed = jax.tree.map(lambda p: p * 1.5, params)
  assert abs(float(net.apply(variables, changed)) - value) > 1e-4


def test_kendall_tau_matches_scipy():
  rng = np.random.default_rng(0)
  for size in (5, 50, 300):
    x = rng.normal(size=size)
    y = 0.5 * x + rng.normal(size=size)
    assert predictors.kendall_tau(x, y) == pytest.approx(scipy.stats.kendalltau(x, y)[0], abs=1e-12)
    ties_x, ties_y = np.round(x), rng.integers(0, 3, size)  # tau-b with ties
    assert predictors.kendall_tau(ties_x, ties_y) == pytest.approx(
        scipy.stats.kendalltau(ties_x, ties_y)[0], abs=1e-12)
  with pytest.raises(ValueError):
    predictors.kendall_tau(np.zeros(3), np.zeros(4))
