# Two entry points; README.md documents both.
PYTHON ?= python3

.PHONY: install test bench demo

install:
	$(PYTHON) -m pip install -e ".[dev]"

test: install
	$(PYTHON) -m pytest -q

bench: install
	$(PYTHON) -m evaluate.bench_layers

demo: install
	$(PYTHON) -m evaluate.demo_layers
