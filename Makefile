# Entry points; README.md documents them.
PYTHON ?= python3
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist
# learned_optimization interop lives in its own virtual environment, so the
# core environment never gets TensorFlow or learned_optimization.
LO_VENV ?= .venv-lo
LO_PYTHON := $(LO_VENV)/bin/python

.PHONY: install system-data test test-core test-lo lo-install bench demo

# Real FashionMNIST comes from Debian's dataset-fashion-mnist package where apt
# is available; without it the tiny_* tasks and tests still run, and
# `unf-data prepare fashion_mnist --from DIR` takes IDX files from anywhere.
system-data:
	@if [ -d $(FASHION_MNIST_DIR) ]; then \
	  echo "FashionMNIST IDX files found in $(FASHION_MNIST_DIR)"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "no apt-get: skipping dataset-fashion-mnist (see README, Data)"; \
	else \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q dataset-fashion-mnist \
	  || ($$SUDO apt-get update -q && $$SUDO apt-get install -y -q dataset-fashion-mnist) \
	  || echo "could not install dataset-fashion-mnist (see README, Data)"; \
	fi

install: system-data
	$(PYTHON) -m pip install -e ".[dev]"

# The core suite, then the learned_optimization interop tests in .venv-lo.
test: test-core test-lo

test-core: install
	$(PYTHON) -m pytest -q

# learned-optimization 0.0.1 cannot be installed with its declared dependencies:
# install the real ones (requirements-lo.txt), then it with --no-deps.
lo-install:
	@[ -x $(LO_PYTHON) ] || $(PYTHON) -m venv $(LO_VENV) || { \
	  echo "could not create $(LO_VENV): on Debian install python3-venv"; exit 1; }
	$(LO_PYTHON) -m pip install -q --upgrade pip
	$(LO_PYTHON) -m pip install -q -r requirements-lo.txt
	$(LO_PYTHON) -m pip install -q --no-deps learned-optimization==0.0.1
	$(LO_PYTHON) -m pip install -q -e ".[dev]"

test-lo: lo-install
	$(LO_PYTHON) -m pytest -q tests_lo

bench: install
	$(PYTHON) -m unf_lopt.evaluate.benchmarks.bench_layers
	$(PYTHON) -m unf_lopt.evaluate.benchmarks.bench_optimizer
	$(PYTHON) -m unf_lopt.evaluate.benchmarks.bench_tasks

demo: install
	$(PYTHON) -m unf_lopt.evaluate.examples.demo
