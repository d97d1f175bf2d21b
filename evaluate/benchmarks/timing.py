"""Wall-clock timing of jitted functions for the benchmarks."""

from __future__ import annotations

import math
import time

import jax


def best_time(fn, repeats: int) -> float:
  """Best mean seconds per call of ``fn`` over 5 rounds of ``repeats`` calls (after a warm-up)."""
  jax.block_until_ready(fn())
  best = math.inf
  for _ in range(5):
    start = time.perf_counter()
    for _ in range(repeats):
      out = fn()
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - start) / repeats)
  return best
