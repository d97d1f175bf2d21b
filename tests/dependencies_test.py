"""The core runs on its own dependencies; optional ones are imported on first use.

A subprocess hides the optional packages (``sys.modules[name] = None`` makes
their import fail, as if they were not installed), then imports every module
of the distribution and uses the core. ``yaml`` cannot be hidden: flax imports
it at import time, which is why PyYAML is a core dependency.
"""

import configparser
import json
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
OPTIONAL = {"tensorflow_datasets": "data", "array_record": "data", "PIL": "data",
            "sentencepiece": "data", "tqdm": "data", "matplotlib": "plot",
            "tensorboardX": "tensorboard"}
CORE = {"jax", "flax", "optax", "numpy", "pyyaml"}

SCRIPT = r"""
import json, pathlib, pkgutil, sys, tempfile
BLOCKED = sys.argv[1].split(",")
for name in BLOCKED:
  sys.modules[name] = None

import importlib
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import unf_lopt

report = {}

# The core: spec inference, the UNF learned optimizer through optax, one step.
model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(3)])
inputs = jax.random.normal(jax.random.PRNGKey(0), (16, 4))
targets = jnp.arange(16) % 3
# Compiled rather than eager: eager flax init dispatches op by op and is slow.
params = jax.jit(model.init)(jax.random.PRNGKey(1), inputs)["params"]
spec = unf_lopt.infer_spec(params, lambda p, x: model.apply({"params": p}, x), (inputs,))
lopt = unf_lopt.NominalLOpt("unf", spec=spec, params_like=params, hidden=4, depth=1)
tx = unf_lopt.as_optax(lopt, jax.jit(lopt.init)(jax.random.PRNGKey(2)))

def loss_fn(p):
  logits = model.apply({"params": p}, inputs)
  return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

@jax.jit
def step(p):
  loss, grads = jax.value_and_grad(loss_fn)(p)
  updates, _ = tx.update(grads, tx.init(p), p, value=loss)
  return optax.apply_updates(p, updates), updates

stepped, updates = step(params)
report["spec_layers_2"] = {k: list(v) for k, v in spec["layers_2"].items()}
report["step_changed_params"] = bool(any(
    np.any(a != b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(stepped))))
report["step_finite"] = bool(all(np.isfinite(u).all() for u in jax.tree.leaves(updates)))

# Every module imports without the optional packages (the learned_optimization
# interop needs its own extra and is tested in tests_lo).
failures, count = {}, 0
for root in ("unf_lopt", "unf_lopt.tasks", "unf_lopt.meta_train", "unf_lopt.evaluate"):
  for module in pkgutil.walk_packages(importlib.import_module(root).__path__, root + "."):
    if module.name.startswith(("unf_lopt.integrations.", "unf_lopt.meta_train.lo_backend",
                               "unf_lopt.evaluate.benchmarks.bench_vs_learned_optimization",
                               "unf_lopt.tasks.lo_tasks")):
      continue
    count += 1
    try:
      importlib.import_module(module.name)
    except Exception as error:
      failures[module.name] = repr(error)
report["import_failures"], report["modules_imported"] = failures, count

# The embedded tiny datasets need nothing optional.
from unf_lopt.tasks import data, tokenizers
from unf_lopt.evaluate import plots
report["tiny_images"] = list(data.load_images("tiny_fashion_mnist", "train")["image"].shape)
report["tiny_text"] = len(data.load_text("tiny_brown_corpus", "train"))

# What needs an extra says which one.
scratch = pathlib.Path(tempfile.mkdtemp())
attempts = {
    "prepare": lambda: data.prepare("brown_corpus", data_dir=scratch),
    "sentencepiece": lambda: tokenizers.sentencepiece_tokenizer(),
    "plot": lambda: plots.plot_evaluations([scratch], scratch / "figure", 1),
}
errors = {}
for what, attempt in attempts.items():
  try:
    attempt()
    errors[what] = None
  except ImportError as error:
    errors[what] = str(error)
report["errors"] = errors

from unf_lopt import extras
bar = extras.progress_bar(total=3, desc="x")
bar.update(1)
bar.close()
report["bar"] = type(bar).__name__
report["still_blocked"] = sorted(name for name in BLOCKED if sys.modules.get(name) is None)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  # Outside the checkout, so only the installed package can be imported.
  result = subprocess.run([sys.executable, "-c", SCRIPT, ",".join(OPTIONAL)],
                          cwd=tmp_path_factory.mktemp("outside"), capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_core_learned_optimizer_runs_without_optional_packages(report):
  assert report["spec_layers_2"] == {"kernel": ["layers_0/kernel:1", None], "bias": [None]}
  assert report["step_changed_params"] and report["step_finite"]
  assert report["still_blocked"] == sorted(OPTIONAL)


def test_every_module_imports_without_optional_packages(report):
  assert report["modules_imported"] > 40
  assert report["import_failures"] == {}


def test_embedded_tiny_datasets_need_no_extra(report):
  assert report["tiny_images"] == [512, 28, 28, 1]
  assert report["tiny_text"] == 400


@pytest.mark.parametrize("what, module, extra", [
    ("prepare", "tensorflow_datasets", "data"),
    ("sentencepiece", "sentencepiece", "data"),
    ("plot", "matplotlib", "plot"),
])
def test_missing_optional_package_error_names_the_extra(report, what, module, extra):
  message = report["errors"][what]
  assert message is not None, f"{what} ran without {module}"
  assert module in message and f'pip install "unf-lopt[{extra}]"' in message


def test_progress_bars_are_optional(report):
  assert report["bar"] != "tqdm" and "tqdm" not in report["bar"]


def _requirement_names(text):
  lines = [line.split("#")[0].strip() for line in text.splitlines()]
  return {re.split(r"[\[<>=!~ ;]", line)[0].lower() for line in lines if line}


def test_setup_cfg_core_is_minimal_and_extras_cover_the_optional_packages():
  config = configparser.ConfigParser()
  config.read(ROOT / "setup.cfg")
  assert _requirement_names(config["options"]["install_requires"]) == CORE
  extras = {name: _requirement_names(value)
            for name, value in config["options.extras_require"].items()}
  assert {"data", "plot", "lo", "docs", "dev", "cuda12"} <= set(extras)
  distributions = {"tensorflow_datasets": "tensorflow-datasets", "array_record": "array-record",
                   "PIL": "pillow", "sentencepiece": "sentencepiece", "tqdm": "tqdm",
                   "matplotlib": "matplotlib", "tensorboardX": "tensorboardx"}
  for module, extra in OPTIONAL.items():
    if extra in extras:  # the tensorboard extra belongs to the logging work
      assert distributions[module] in extras[extra], (module, extra)
      assert distributions[module] in extras["dev"], f"the tests need {module}"
  assert "chex" not in _requirement_names(config["options"]["install_requires"])
  # learned-optimization itself is installed with --no-deps (its pins cannot be met).
  assert "learned-optimization" not in extras["lo"]
  assert _requirement_names((ROOT / "requirements-lo.txt").read_text()) - {"jaxlib"} <= \
         extras["lo"] | CORE
