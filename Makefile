# Two entry points; README.md documents both.
PYTHON ?= python3
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: install system-data test bench demo

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

test: install
	$(PYTHON) -m pytest -q

bench: install
	$(PYTHON) -m evaluate.bench_layers
	$(PYTHON) -m evaluate.bench_optimizer
	$(PYTHON) -m evaluate.bench_tasks

demo: install
	$(PYTHON) -m evaluate.demo
