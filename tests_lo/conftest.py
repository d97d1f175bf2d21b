"""Settings of the learned_optimization interop tests (run in .venv-lo: `make test-lo`).

These tests live outside ``tests/`` because they need learned_optimization,
which the core environment does not have; `make test` runs both suites.
"""

import jax

# As in tests/conftest.py: full f32 matmuls for the numerical comparisons.
jax.config.update("jax_default_matmul_precision", "highest")
