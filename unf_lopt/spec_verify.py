"""Checking numerically that a spec is a symmetry of a model.

:func:`verify_spec` permutes the parameters along each axis name of a spec (a
random permutation, never the identity) and checks that the model's outputs do
not change. A spec inferred by :func:`unf_lopt.infer_spec` passes by
construction; a spec written by hand, edited with overrides, or shipped for
another model may not, and the error names every axis name that breaks it.

Example:
  >>> import jax, jax.numpy as jnp
  >>> params = {"w1": jnp.ones((3, 4)) * jnp.arange(4.0), "w2": jnp.arange(8.0).reshape(4, 2)}
  >>> fn = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
  >>> x = jnp.linspace(-1, 1, 6).reshape(2, 3)
  >>> report = verify_spec(fn, params, {"w1": (None, "h"), "w2": ("h", None)}, x)
  >>> sorted(report)
  ['<all names>', 'h']
  >>> verify_spec(fn, params, {"w1": (None, "h"), "w2": (None, None)}, x)
  Traceback (most recent call last):
  ...
  unf_lopt.spec.SpecError: the spec is not a symmetry of the model: ... 'h' (e.g. 'w1' axis 1, ...
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from unf_lopt.spec import FIXED, SpecError, tensor_infos, validate_spec

PyTree = Any

ALL_NAMES = "<all names>"
"""The report key of the check that permutes every axis name at once."""


def _axes_per_leaf(spec: PyTree, tree: PyTree) -> list[tuple[str, tuple]]:
  """``(path, axes)`` for every leaf of ``tree``, in its flattening order."""
  return [(info.path, info.axes) for info in tensor_infos(spec, tree)[0]]


def _permute_tree(tree: PyTree, axes_per_leaf: Sequence[tuple[str, tuple]],
                  permutations: dict[Hashable, np.ndarray]) -> PyTree:
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  permuted = []
  for leaf, (_, axes) in zip(leaves, axes_per_leaf):
    for axis, name in enumerate(axes):
      if name is not FIXED and name in permutations:
        leaf = jnp.take(leaf, permutations[name], axis=axis)
    permuted.append(leaf)
  return jax.tree_util.tree_unflatten(treedef, permuted)


def _random_permutation(rng: np.random.RandomState, size: int) -> np.ndarray:
  permutation = rng.permutation(size)
  if size > 1 and np.array_equal(permutation, np.arange(size)):
    permutation = np.roll(permutation, 1)  # never the identity: it would prove nothing
  return permutation


def verify_spec(fn: Callable[..., Any], params: PyTree, spec: PyTree, *example_args: Any,
                key: jax.Array | None = None, num_trials: int = 1, rtol: float = 1e-4,
                atol: float = 1e-5, input_specs: PyTree | None = None,
                output_spec: PyTree | None = None) -> dict[Hashable, float]:
  """Checks that permuting ``params`` as ``spec`` says leaves ``fn``'s outputs unchanged.

  For each axis name, and once for all names together, every parameter axis
  carrying the name is permuted by one random permutation (never the identity)
  and ``fn(permuted_params, *example_args)`` is compared with the unpermuted
  run, leaf by leaf, with ``np.allclose(rtol, atol)``.

  Without ``input_specs``/``output_spec`` this checks *invariance*, which is
  what a spec with fixed inputs and outputs (``infer_spec``'s default
  ``fixed_io=True``) promises. A spec that permutes the data axes (the UNF
  paper's convention, ``fixed_io=False``) is an *equivariance*: give the data
  axes' names with ``input_specs`` (a spec of the tuple ``example_args``) and
  ``output_spec`` (a spec of ``fn``'s output); inputs are then permuted along
  those names too and the outputs are compared after permuting the reference.

  Args:
    fn: the model, ``fn(params, *example_args)``.
    params: the parameters (any pytree, boxed leaves included).
    spec: the spec to check; it must validate against ``params``.
    *example_args: inputs. Use typical values (random, not all zeros): a
      symmetry checked at zero proves little.
    key: a PRNG key for the permutations (default: a fixed seed).
    num_trials: how many random permutations per name.
    rtol: relative tolerance of the comparison.
    atol: absolute tolerance of the comparison.
    input_specs: names of the data axes of ``example_args`` (for specs that
      permute the inputs), mirroring the tuple ``example_args``.
    output_spec: names of the axes of ``fn``'s output, mirroring it.

  Returns:
    The largest absolute deviation seen per axis name, and under
    :data:`ALL_NAMES` for all names permuted together.

  Raises:
    SpecError: listing every name whose permutation changes an output, with a
      tensor carrying it and the deviation.
  """
  sizes = validate_spec(spec, params)
  param_axes = _axes_per_leaf(spec, params)
  input_axes = output_axes = None
  if input_specs is not None:
    for name, size in validate_spec(input_specs, tuple(example_args)).items():
      if sizes.setdefault(name, size) != size:
        raise SpecError(f"input_specs give the name {name!r} size {size} but the spec has "
                        f"size {sizes[name]}")
    input_axes = _axes_per_leaf(input_specs, tuple(example_args))
  run = jax.jit(fn)
  reference = run(params, *example_args)
  if output_spec is not None:
    for name, size in validate_spec(output_spec, reference).items():
      if sizes.setdefault(name, size) != size:
        raise SpecError(f"output_spec gives the name {name!r} size {size} but the spec has "
                        f"size {sizes[name]}")
    output_axes = _axes_per_leaf(output_spec, reference)
  carrier = {}
  for axes_list in (param_axes, input_axes or [], output_axes or []):
    for path, axes in axes_list:
      for axis, name in enumerate(axes):
        if name is not FIXED:
          carrier.setdefault(name, f"'{path}' axis {axis}")

  seed = 0 if key is None else int(jax.random.randint(key, (), 0, 2**31 - 1))
  rng = np.random.RandomState(seed)
  names = list(sizes)
  checks = [[name] for name in names] + ([names] if names else [])
  reference_leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(reference)]
  report: dict[Hashable, float] = {}
  failures: dict[Hashable, float] = {}
  for _ in range(num_trials):
    for group in checks:
      label = ALL_NAMES if group is names else group[0]
      permutations = {name: _random_permutation(rng, sizes[name]) for name in group}
      args = example_args
      if input_axes is not None:
        args = _permute_tree(tuple(example_args), input_axes, permutations)
      expected = reference_leaves
      if output_axes is not None:
        expected = [np.asarray(x) for x in jax.tree_util.tree_leaves(
            _permute_tree(reference, output_axes, permutations))]
      outputs = jax.tree_util.tree_leaves(run(_permute_tree(params, param_axes, permutations),
                                              *args))
      deviation, close = 0.0, True
      for got, want in zip(outputs, expected):
        got = np.asarray(got)
        if got.size:
          got_f, want_f = got.astype(np.float64), want.astype(np.float64)
          difference = np.where(np.isnan(got_f) & np.isnan(want_f), 0.0, np.abs(got_f - want_f))
          deviation = max(deviation, float(np.max(np.nan_to_num(difference, nan=np.inf))))
        close = close and np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
      report[label] = max(report.get(label, 0.0), deviation)
      if not close:
        failures[label] = report[label]
  if failures:
    broken = [f"{name!r} (e.g. {carrier[name]}, size {sizes[name]}): max deviation "
              f"{deviation:.3g}" for name, deviation in failures.items() if name != ALL_NAMES]
    if not broken:
      broken = [f"all names together (but no single one): max deviation "
                f"{failures[ALL_NAMES]:.3g}"]
    raise SpecError("the spec is not a symmetry of the model: permuting these axis names "
                    "changes its outputs: " + "; ".join(broken))
  return report
