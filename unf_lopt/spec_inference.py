"""Inferring the weight-space specification of a model from its computation.

:func:`infer_spec` traces the model to a jaxpr and follows every parameter axis
through every operation (:mod:`unf_lopt.spec_tracing`): axes that a matrix
product contracts, that are added together, that a loop carries from one step
to the next, must be permuted together and get one name; axes that a reshape
merges, a slice cuts, a convolution slides over, a varying constant (a fixed
position table) pins, or an unknown operation reads, are ``FIXED``. The result
is never a false symmetry: when the analysis is unsure it fixes the axis.

Parameter names and shapes alone cannot tell a branch from a chain, a fixed
position encoding from none, GroupNorm from LayerNorm, or a dict out of call
order; so :func:`infer_spec` needs the model. Where no model function is at
hand, write the spec by hand with :func:`unf_lopt.spec.mlp_spec`,
:func:`unf_lopt.spec.dense_spec`, :func:`unf_lopt.spec.conv_spec` and friends.

Example:
  >>> import jax, jax.numpy as jnp, flax.linen as nn
  >>> model = nn.Sequential([nn.Dense(32), nn.relu, nn.Dense(10)])
  >>> x = jnp.zeros((1, 64))
  >>> params = model.init(jax.random.PRNGKey(0), x)["params"]
  >>> apply_fn = lambda p, x: model.apply({"params": p}, x)
  >>> infer_spec(params, apply_fn, (x,))["layers_2"]
  {'bias': (None,), 'kernel': ('layers_0/kernel:1', None)}
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import jax

from unf_lopt.spec import FIXED, SpecError, validate_spec
from unf_lopt.spec_tracing import TracedAxes, trace_axis_classes

PyTree = Any

_NO_APPLY_FN = (
    "infer_spec needs the model: infer_spec(params, apply_fn, example_args), where "
    "apply_fn(params, *example_args) runs it (for flax: "
    "apply_fn=lambda p, x: model.apply({'params': p}, x)). Parameter names and shapes alone "
    "cannot tell branches, projection shortcuts, fixed position encodings, GroupNorm or "
    "token mixing from a plain chain, so a spec guessed from them can be a false symmetry. "
    "Without a model function, write the spec by hand with unf_lopt.mlp_spec, dense_spec, "
    "conv_spec, embed_spec, layer_norm_spec, recurrent_cell_spec or attention_spec.")


def infer_spec(params: PyTree, apply_fn: Callable[..., Any] | None = None,
               example_args: Any = (), *, fixed_io: bool = True,
               overrides: Mapping[Any, Any] | None = None) -> PyTree:
  """The largest weight-space symmetry of ``apply_fn`` the analysis can prove, as a spec.

  Args:
    params: the pytree ``apply_fn`` reads as its first argument: a flax
      ``params`` dict, boxed params (``nn.Partitioned`` from
      ``nn.with_logical_partitioning``), or the whole variables dict when other
      collections (BatchNorm's ``batch_stats``) must be permuted with the weights.
    apply_fn: the model, ``apply_fn(params, *example_args)``. Required.
    example_args: example inputs (a tuple, or one array): shapes and dtypes
      matter, not values.
    fixed_io: keep the axes of the inputs and outputs in place (the true
      symmetry). ``False`` lets them be permuted, as the UNF paper does with input
      features and output classes; the spec then is a symmetry only if the data
      is permuted too.
    overrides: changes to the inferred spec, keyed by tensor path (the
      ``'Dense_0/kernel'`` form) with a tuple of one entry per axis, or by
      ``(path, axis)`` with one entry. An entry is ``FIXED`` (always allowed:
      it fixes the axis and every axis tied to it), a name of your choosing
      (renames the axis's whole class; one name on two classes ties them, and an
      inferred name ties to that name's class), or ``...`` (keep the inferred one).
      Naming an axis the analysis fixed is refused, with the reason it was fixed.

  Returns:
    A spec mirroring ``params`` (so ``validate_spec(spec, params)`` holds). Axis
    names are ``'<tensor path>:<axis>'`` of the first kernel-like tensor
    carrying the class, unless renamed by ``overrides``.

  Raises:
    SpecError: without ``apply_fn``; for overrides that name unknown tensors
      (with close matches), un-fix a fixed axis (with the reason), or tie axes
      of different sizes. Every message names the tensors and axes concerned.

  Example:
    A ResNet with BatchNorm: pass the whole variables dict so that the running
    statistics are permuted with the channels, then take the parts you need.

    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> class Net(nn.Module):
    ...   @nn.compact
    ...   def __call__(self, x, train):
    ...     x = nn.Conv(8, (3, 3))(x)
    ...     x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
    ...     return nn.Dense(10)(x.mean(axis=(1, 2)))
    >>> model, x = Net(), jnp.zeros((2, 6, 6, 3))
    >>> variables = model.init(jax.random.PRNGKey(0), x, train=False)
    >>> spec = infer_spec(variables, lambda v, x: model.apply(v, x, train=False), (x,))
    >>> spec["params"]["Conv_0"]["kernel"], spec["batch_stats"]["BatchNorm_0"]["mean"]
    ((None, None, None, 'params/Conv_0/kernel:3'), ('params/Conv_0/kernel:3',))
    >>> infer_spec(variables, lambda v, x: model.apply(v, x, train=False), (x,),
    ...            overrides={("params/Conv_0/kernel", 3): "channels"})["params"]["Dense_0"]
    {'bias': (None,), 'kernel': ('channels', None)}
  """
  if apply_fn is None:
    raise SpecError(_NO_APPLY_FN)
  if not isinstance(example_args, (tuple, list)):
    example_args = (example_args,)
  traced = trace_axis_classes(apply_fn, params, tuple(example_args), fixed_io=fixed_io)
  axes = _apply_overrides(traced, overrides or {})
  spec = jax.tree_util.tree_unflatten(traced.treedef, axes)
  validate_spec(spec, params)
  return spec


# ---------------------------------------------------------------------------
# Overrides.


class _ClassGroups:
  """Classes tied together by overrides (a small union-find over class ids)."""

  def __init__(self):
    self.parent: dict[int, int] = {}

  def find(self, cls: int) -> int:
    while self.parent.get(cls, cls) != cls:
      cls = self.parent[cls]
    return cls

  def union(self, a: int, b: int) -> None:
    ra, rb = self.find(a), self.find(b)
    if ra != rb:
      self.parent[max(ra, rb)] = min(ra, rb)


def _resolve_path(path: Any, index_of: Mapping[str, int], key: Any) -> int:
  if not isinstance(path, str):
    raise SpecError(f"overrides key {key!r}: expected a tensor path such as 'Dense_0/kernel' "
                    "or a (path, axis) pair")
  if path in index_of:
    return index_of[path]
  if f"{path}/value" in index_of:  # a boxed (nn.Partitioned) leaf named without its box
    return index_of[f"{path}/value"]
  close = difflib.get_close_matches(path, list(index_of), n=5, cutoff=0.5)
  hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else (
      f"; the tensors are {', '.join(repr(p) for p in list(index_of)[:12])}"
      f"{', ...' if len(index_of) > 12 else ''}")
  raise SpecError(f"overrides name the tensor '{path}', which is not in params{hint}")


def _override_entries(traced: TracedAxes, overrides: Mapping[Any, Any]
                      ) -> list[tuple[int, int, Any, Any]]:
  """``(leaf, axis, entry, key)`` for every entry of ``overrides``."""
  index_of = {path: leaf for leaf, path in enumerate(traced.paths)}
  entries = []
  for key, value in overrides.items():
    if isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], int):
      leaf = _resolve_path(key[0], index_of, key)
      rank = len(traced.shapes[leaf])
      if not -rank <= key[1] < rank:
        raise SpecError(f"overrides[{key!r}]: '{traced.paths[leaf]}' has {rank} axes "
                        f"(shape {traced.shapes[leaf]}); axis {key[1]} does not exist")
      entries.append((leaf, key[1] % rank, value, key))
      continue
    leaf = _resolve_path(key, index_of, key)
    shape = traced.shapes[leaf]
    if not isinstance(value, tuple) or len(value) != len(shape):
      raise SpecError(f"overrides[{key!r}] = {value!r}: '{traced.paths[leaf]}' has shape "
                      f"{shape}, so give a tuple of {len(shape)} entries (a name, FIXED or ...)"
                      " or key one axis as (path, axis)")
    entries.extend((leaf, axis, entry, key) for axis, entry in enumerate(value))
  return entries


def _apply_overrides(traced: TracedAxes, overrides: Mapping[Any, Any]) -> list[tuple]:
  """Per parameter leaf, its axis names after ``overrides``."""
  auto_names = traced.class_names()  # class -> inferred name, in a deterministic order
  class_of_name = {name: cls for cls, name in auto_names.items()}
  groups = _ClassGroups()
  user_fixed: dict[int, str] = {}
  named: dict[Hashable, list[tuple[int, str]]] = {}  # user name -> [(class, where)]
  for leaf, axis, entry, key in _override_entries(traced, overrides):
    path, cls = traced.paths[leaf], traced.classes[leaf][axis]
    where = f"'{path}' axis {axis}"
    if entry is Ellipsis:
      continue
    if entry is FIXED:
      user_fixed.setdefault(cls, f"overrides[{key!r}] fixes {where}")
      continue
    try:
      hash(entry)
    except TypeError:
      raise SpecError(f"overrides[{key!r}]: the entry for {where} is {entry!r}; an entry is a "
                      "hashable name, FIXED (None) or ...") from None
    if traced.shapes[leaf][axis] == 1:
      raise SpecError(f"overrides[{key!r}] names {where} {entry!r}, but that axis has size 1: "
                      "there is nothing to permute (use FIXED or ...)")
    if cls in traced.fixed_reasons:
      raise SpecError(
          f"overrides[{key!r}] names {where} {entry!r}, but the analysis fixed that axis: "
          f"{traced.fixed_reasons[cls]}. Permuting it would change the model's output, so it "
          "cannot be un-fixed (FIXED is always allowed).")
    named.setdefault(entry, []).append((cls, where))
    if entry in class_of_name:  # an inferred name: tie to its class
      named[entry].append((class_of_name[entry], f"the axes inferred as {entry!r}"))

  size_of_class = {}
  for leaf, classes in enumerate(traced.classes):
    for axis, cls in enumerate(classes):
      size_of_class.setdefault(cls, (traced.shapes[leaf][axis], f"'{traced.paths[leaf]}' axis "
                                                                f"{axis}"))
  for name, members in named.items():
    first_cls, first_where = members[0]
    for cls, where in members[1:]:
      if size_of_class[cls][0] != size_of_class[first_cls][0]:
        raise SpecError(
            f"overrides give the name {name!r} to {first_where} (size "
            f"{size_of_class[first_cls][0]}) and to {where} (size {size_of_class[cls][0]}); "
            "axes with one name must have one size")
      groups.union(first_cls, cls)

  group_name: dict[int, Hashable] = {}
  group_where: dict[int, str] = {}
  for name, members in named.items():
    root = groups.find(members[0][0])
    if root in group_name and group_name[root] != name:
      raise SpecError(
          f"overrides give one class of tied axes two names, {group_name[root]!r} "
          f"({group_where[root]}) and {name!r} ({members[0][1]}): the analysis found these "
          "axes must be permuted together")
    group_name[root], group_where[root] = name, members[0][1]
  fixed_groups = {groups.find(cls): why for cls, why in user_fixed.items()}
  for root, name in group_name.items():
    if root in fixed_groups:
      raise SpecError(f"overrides both fix and name {name!r} one class of tied axes "
                      f"({fixed_groups[root]}; named at {group_where[root]})")
  for cls, name in auto_names.items():  # the first inferred name of each unnamed group
    group_name.setdefault(groups.find(cls), name)

  result = []
  for leaf, classes in enumerate(traced.classes):
    entries = []
    for axis, cls in enumerate(classes):
      root = groups.find(cls)
      if not traced.is_permutable(leaf, axis) or root in fixed_groups:
        entries.append(FIXED)
      else:
        entries.append(group_name[root])
    result.append(tuple(entries))
  return result
