"""The evaluation commands' entry points: argument parsing, input checks and ``main``.

One module per command: `evaluate` (``unf-evaluate``), `plot` (``unf-plot``),
`predict_generalization` (``unf-predict-generalization``) and `classify_inrs`
(``unf-classify-inrs``). The work itself is done by `unf_lopt.evaluate` and
`unf_lopt.evaluate.experiments`.
"""
