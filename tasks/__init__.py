"""Part of unf-lopt; see README.md."""
