"""Part of unf-lopt: evaluate/experiments."""
