"""Optional bridges to other learned-optimizer frameworks.

Nothing here is imported by ``unf_lopt`` itself: each integration pulls in its
framework, which the core does not depend on. Import the submodule you need,
e.g. ``from unf_lopt.integrations import learned_optimization``.
"""
