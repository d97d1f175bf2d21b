# Entry points; README.md documents them.
PYTHON ?= python3
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist
# learned_optimization interop lives in its own virtual environment, so the
# core environment never gets TensorFlow or learned_optimization.
LO_VENV ?= .venv-lo
LO_PYTHON := $(LO_VENV)/bin/python

.PHONY: install system-data test test-core test-fast lint test-lo lo-install bench demo docs \
	device-check

# Real FashionMNIST comes from Debian's dataset-fashion-mnist package where apt
# is available; without it the tiny_* tasks and tests still run, and
# `unf-data prepare fashion_mnist --from DIR` takes IDX files from anywhere.
# `make install SYSTEM_DATA=0` (or demo, test) skips this step.
SYSTEM_DATA ?= 1
system-data:
	@if [ "$(SYSTEM_DATA)" = 0 ]; then \
	  echo "system-data: skipped (SYSTEM_DATA=0)"; \
	elif [ -d $(FASHION_MNIST_DIR) ]; then \
	  echo "system-data: FashionMNIST IDX files found in $(FASHION_MNIST_DIR)"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "system-data: no apt-get, skipping dataset-fashion-mnist (see README, Data)"; \
	else \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "system-data: installing the Debian package dataset-fashion-mnist (31 MB download)"; \
	  echo "  with $${SUDO:+sudo }apt-get: the real FashionMNIST for mlp_fmnist and make demo."; \
	  echo "  Skip it with SYSTEM_DATA=0: the tiny_* tasks and the tests run without it."; \
	  $$SUDO apt-get install -y -q dataset-fashion-mnist \
	  || ($$SUDO apt-get update -q && $$SUDO apt-get install -y -q dataset-fashion-mnist) \
	  || echo "system-data: could not install dataset-fashion-mnist (see README, Data)"; \
	fi

install: system-data
	$(PYTHON) -m pip install -e ".[dev]"

# The core suite, the learned_optimization interop tests in .venv-lo, the docs.
test: test-core test-lo docs

# Every test, one pytest-xdist worker per core.
test-core: install lint
	$(PYTHON) -m pytest -q -n auto

# The everyday loop: everything but the slow end-to-end tests, one worker per core.
# The persistent compilation cache in tests/conftest.py makes every run after the
# first several times faster (about 3 minutes on two cores).
test-fast: install
	$(PYTHON) -m pytest -q -m "not slow" -n auto

# ruff's rules are in pyproject.toml.
lint: install
	$(PYTHON) -m ruff check .

# learned-optimization 0.0.1 cannot be installed with its declared dependencies:
# install the real ones (requirements-lo.txt), then it with --no-deps.
lo-install:
	@[ -x $(LO_PYTHON) ] || $(PYTHON) -m venv $(LO_VENV) || { \
	  echo "could not create $(LO_VENV): on Debian install python3-venv"; exit 1; }
	$(LO_PYTHON) -m pip install -q --upgrade pip
	$(LO_PYTHON) -m pip install -q -r requirements-lo.txt
	$(LO_PYTHON) -m pip install -q --no-deps learned-optimization==0.0.1
	$(LO_PYTHON) -m pip install -q -e ".[dev]"

# learned_optimization 0.0.1 calls deprecated flax and TensorFlow APIs; its warnings are shown
# here (-W default) instead of failing as in tests/ (filterwarnings = error in pyproject.toml).
test-lo: lo-install
	$(LO_PYTHON) -m pytest -q -W default tests_lo

bench: install
	$(PYTHON) -m unf_lopt.evaluate.benchmarks.bench_layers
	$(PYTHON) -m unf_lopt.evaluate.benchmarks.bench_optimizer
	$(PYTHON) -m unf_lopt.evaluate.benchmarks.bench_tasks

# On a machine with an NVIDIA GPU: CUDA jax at the installed jax version, the tests that
# exercise devices, and meta-training speed on every paper task with 1 and all devices.
DEVICE_TESTS = tests/pes_test.py tests/multiprocess_test.py tests/conv_test.py \
	tests/layers_test.py tests/optimizer_test.py tests/trainer_test.py
device-check: install
	$(PYTHON) -m pip install -q "jax[cuda12]==$$($(PYTHON) -c 'import jax; print(jax.__version__)')"
	$(PYTHON) -c "import jax; print(jax.devices())"
	$(PYTHON) -m pytest -q $(DEVICE_TESTS)
	$(PYTHON) -m unf_lopt.evaluate.benchmarks.bench_meta_train --task all \
	  --task-options '{"transformer_lm1b": {"tokenizer": "bytes"}}' --devices 1,all

demo: install
	$(PYTHON) -m unf_lopt.evaluate.examples.demo

# The docs site (mkdocs.yml) into site/, with warnings as errors. The variable
# silences mkdocs-material's banner about MkDocs 2.
docs:
	$(PYTHON) -m pip install -q -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict
