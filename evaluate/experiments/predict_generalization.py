"""Predicting zoo models' test success from their weights (the paper's Table 1).

The ``unf-predict-generalization`` command
(`unf_lopt.evaluate.commands.predict_generalization`) runs
`predict_generalization` on a zoo of ``unf-make-zoo``. It trains the
predictor (binary cross-entropy on the success rate, Adam 1e-3, batch 10, up
to 10 epochs, early stopping on validation loss) once per seed and reports
Kendall's tau on the zoo's test split as mean +- standard error.
Paper Table 1 (10,000 models, hidden 128): Deep Set 0.8306, StatNN 0.8839,
UNF 0.8968.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from unf_lopt.evaluate.evaluation import mean_and_standard_error
from unf_lopt.evaluate.experiments import predictors
from unf_lopt.tasks.zoo import addition

PREDICTORS = ("unf", "deepset", "statnn")


def build_predictor(kind: str, weights, split: np.ndarray, channels: int, mlp_width: int,
                    identity_share: float | None = None):
  """The predictor ``kind`` (one of `PREDICTORS`) for the zoo's GRU weight space."""
  if kind == "statnn":
    train = jax.tree.map(lambda w: w[split == 0], weights)
    return predictors.statnn_for(train, mlp=(mlp_width,) * 6)
  if kind in ("unf", "deepset"):
    return predictors.InvariantPredictor(
        addition.spec(), layer=kind, channels=channels, mlp=(mlp_width,) * 3,
        identity_share=identity_share)
  raise ValueError(f"unknown predictor {kind!r}; expected unf, deepset or statnn")


def predict_generalization(zoo: dict[str, Any], kind: str, seeds: Sequence[int], *,
                           epochs: int = 10, batch_size: int = 10, learning_rate: float = 1e-3,
                           channels: int = 16, mlp_width: int | None = None,
                           identity_share: float | None = None,
                           report: Callable[[str], None] | None = None) -> dict[str, Any]:
  """Trains predictor ``kind`` once per seed on a `tasks.zoo.generate.load_zoo` zoo.

  ``mlp_width`` defaults to the paper's: 600 for ``statnn``, 512 otherwise.
  ``report`` receives one line per seed.

  Returns:
    ``{"taus": test Kendall tau per seed, "mean", "standard_error"}``.
  """
  width = mlp_width or (600 if kind == "statnn" else 512)
  net = build_predictor(kind, zoo["params"], zoo["split"], channels, width, identity_share)
  taus = []
  for seed in seeds:
    result = predictors.fit_predictor(net, zoo["params"], zoo["success_rate"], zoo["split"],
                                      seed=seed, epochs=epochs, batch_size=batch_size,
                                      learning_rate=learning_rate)
    taus.append(result["test_tau"])
    if report is not None:
      report(f"seed {seed}: test Kendall tau {result['test_tau']:.4f} "
             f"(best epoch {result['best_epoch']})")
  mean, error = mean_and_standard_error(np.asarray(taus))
  return {"taus": taus, "mean": mean, "standard_error": error}
