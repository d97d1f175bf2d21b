"""Runs the docstring examples of the library, so the documentation stays true."""

import doctest
import importlib

import pytest

MODULES = ["unf_lopt.spec", "unf_lopt.spec_inference", "unf_lopt.basis", "unf_lopt.layers",
           "unf_lopt.permutations", "unf_lopt.features", "unf_lopt.optimizer",
           "unf_lopt.optax_adapter", "unf_lopt.checkpoint", "unf_lopt.tasks.data", "unf_lopt.tasks.tokenizers",
           "unf_lopt.tasks.registry", "unf_lopt.meta_train.pes", "unf_lopt.meta_train.trainer",
           "unf_lopt.tasks.zoo.addition", "unf_lopt.tasks.chunked", "unf_lopt.tasks.inr", "unf_lopt.evaluate.experiments.predictors"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
  result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0, f"{name} has no examples"
  assert result.failed == 0
