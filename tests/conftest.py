"""Test-wide settings."""

import os
import pathlib

import jax

# Numerical comparisons against references need full f32 matmuls; on GPUs the
# default precision for f32 dots is TF32, which differs at about 1e-3.
jax.config.update("jax_default_matmul_precision", "highest")

# Most of the suite's time is XLA compiling the same programs run after run. A persistent
# compilation cache (keyed by program, jax version and flags, so never stale) makes every
# run after the first several times faster. JAX_COMPILATION_CACHE_DIR overrides the place;
# an empty value turns the cache off.
_CACHE = os.environ.get("JAX_COMPILATION_CACHE_DIR",
                        str(pathlib.Path(__file__).resolve().parent.parent / ".cache" / "jax"))
if _CACHE:
  jax.config.update("jax_compilation_cache_dir", _CACHE)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
