"""Part of unf-lopt: evaluate/benchmarks."""
