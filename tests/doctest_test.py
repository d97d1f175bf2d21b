"""Runs the docstring examples of the library, so the documentation stays true."""

import doctest
import importlib

import pytest

MODULES = ["unf_lopt.spec", "unf_lopt.spec_inference", "unf_lopt.basis", "unf_lopt.layers",
           "unf_lopt.permutations", "unf_lopt.features", "unf_lopt.optimizer",
           "unf_lopt.optax_adapter", "unf_lopt.checkpoint", "tasks.data", "tasks.tokenizers",
           "tasks.registry", "meta_train.pes", "meta_train.trainer",
           "tasks.zoo.addition", "tasks.chunked", "tasks.inr", "evaluate.predictors"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
  result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0, f"{name} has no examples"
  assert result.failed == 0
