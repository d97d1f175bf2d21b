"""Part of unf-lopt: evaluate/examples."""
