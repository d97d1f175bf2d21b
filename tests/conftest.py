"""Test-wide settings."""

import jax

# Numerical comparisons against references need full f32 matmuls; on GPUs the
# default precision for f32 dots is TF32, which differs at about 1e-3.
jax.config.update("jax_default_matmul_precision", "highest")
