"""Runs the docstring examples of every module, so the documentation stays true."""

import doctest
import importlib
import pkgutil

import pytest

# The repository's folders install as these packages (setup.cfg package_dir).
ROOTS = ("unf_lopt", "unf_lopt.tasks", "unf_lopt.meta_train", "unf_lopt.evaluate")

# These import learned_optimization, which only .venv-lo has; tests_lo/ runs them there.
NEEDS_LEARNED_OPTIMIZATION = {
    "unf_lopt.integrations.learned_optimization", "unf_lopt.meta_train.lo_backend",
    "unf_lopt.tasks.lo_tasks", "unf_lopt.evaluate.benchmarks.bench_vs_learned_optimization"}

# Modules whose documentation must show an example (a module that loses its
# examples in a refactoring fails here instead of passing with nothing run).
MODULES = ["unf_lopt.spec", "unf_lopt.spec_inference", "unf_lopt.spec_matching",
           "unf_lopt.basis", "unf_lopt.layers",
           "unf_lopt.layers.deepset", "unf_lopt.atomic",
           "unf_lopt.permutations", "unf_lopt.features", "unf_lopt.optimizer",
           "unf_lopt.optax_adapter", "unf_lopt.checkpoint", "unf_lopt.tasks.data",
           "unf_lopt.tasks.tokenizers", "unf_lopt.tasks.registry", "unf_lopt.meta_train.pes",
           "unf_lopt.meta_train.trainer", "unf_lopt.tasks.zoo.addition", "unf_lopt.tasks.chunked",
           "unf_lopt.tasks.inr", "unf_lopt.evaluate.experiments.predictors"]

# Examples that run a whole (if tiny) meta-training.
SLOW = {"unf_lopt.meta_train.trainer"}


def all_modules():
  names = set(ROOTS)
  for root in ROOTS:
    package = importlib.import_module(root)
    names.update(info.name for info in pkgutil.walk_packages(package.__path__, f"{root}."))
  return sorted(names - NEEDS_LEARNED_OPTIMIZATION)


ALL_MODULES = all_modules()


def test_modules_that_must_have_examples_exist():
  assert set(MODULES) <= set(ALL_MODULES), sorted(set(MODULES) - set(ALL_MODULES))


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name for name in ALL_MODULES])
def test_docstring_examples(name):
  result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
  if name in MODULES:
    assert result.attempted > 0, f"{name} has no examples"
  assert result.failed == 0
