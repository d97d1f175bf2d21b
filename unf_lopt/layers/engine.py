"""The fold engine shared by the weight-space layers.

Turns a feature pytree and its spec into per-tensor arrays whose fixed axes
are folded into channels, pools and reads diagonals along the permuted axes
(one :class:`~unf_lopt.basis.Reduction` at a time), writes pooled results back
into an output pattern, and picks per input tensor whether a layer maps
channels before or after pooling.

Axes are named by letters in ``einsum`` subscripts: lowercase letters are
partition labels of a basis term, uppercase letters are positions of an
output tensor.
"""

from __future__ import annotations

import dataclasses
import math
import string
from collections.abc import Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from unf_lopt import basis
from unf_lopt.spec import SpecError, TensorInfo, tensor_infos

PyTree = Any
_LABEL_LETTERS = string.ascii_lowercase
_POSITION_LETTERS = string.ascii_uppercase
# Entries in the block below the leading pooled axes from which pooling goes
# through a matrix-vector product; see `mean_pool`.
LONG_INNER_BLOCK = 1 << 16


def features_and_infos(features: PyTree, spec: PyTree
                       ) -> tuple[list[jax.Array], list[TensorInfo], Any, int]:
  """Flattens ``features`` against ``spec``.

  Returns:
    The feature leaves, their tensor infos, the treedef to unflatten outputs
    with, and the channel count all leaves share.

  Raises:
    SpecError: if ``features`` does not match ``spec`` or the leaves disagree
      on their channel count (each is named).
  """
  infos, treedef = tensor_infos(spec, features, trailing_dims=1)
  leaves = treedef.flatten_up_to(features)
  channels = {int(leaf.shape[-1]) for leaf in leaves}
  if len(channels) != 1:
    detail = ", ".join(f"'{i.path}': {leaf.shape[-1]}" for i, leaf in zip(infos, leaves))
    raise SpecError(f"all feature tensors must have the same channel count; got {detail}")
  return leaves, infos, treedef, channels.pop()


def fold_fixed(x: jax.Array, info: TensorInfo) -> jax.Array:
  """``[*shape, C]`` -> ``[*permuted_shape, prod(fixed_shape) * C]``."""
  permuted, fixed = info.permuted_positions, info.fixed_positions
  if not fixed:
    return x
  x = jnp.transpose(x, (*permuted, *fixed, x.ndim - 1))
  return x.reshape(*(info.shape[p] for p in permuted), -1)


def unfold_fixed(y: jax.Array, info: TensorInfo, channels: int) -> jax.Array:
  """Inverse of :func:`fold_fixed` for an output with ``channels`` channels."""
  permuted, fixed = info.permuted_positions, info.fixed_positions
  if not fixed:
    return y
  y = y.reshape(*(info.shape[p] for p in permuted), *(info.shape[p] for p in fixed), channels)
  order = (*permuted, *fixed)
  inverse = [order.index(axis) for axis in range(len(order))]
  return jnp.transpose(y, (*inverse, len(order)))


def fixed_size(info: TensorInfo) -> int:
  """Number of entries along the fixed axes of a tensor (1 without any)."""
  return math.prod(info.shape[p] for p in info.fixed_positions)


@dataclasses.dataclass(frozen=True)
class SharedFixedAxis:
  """Axis name a layer gives one large fixed axis: unique to that axis of that tensor.

  A layer then shares its weights over the axis (as over a permuted axis)
  instead of folding each index into channels. Equivariance to the permutations
  of this name is more than the true symmetry asks, so the layer stays
  equivariant to the true one; positional channels (:func:`positional_channels`)
  let an update network tell the indices apart again.
  """

  path: str
  position: int


def large_fixed_positions(info: TensorInfo, max_folded_size: int | None) -> tuple[int, ...]:
  """The fixed axes of ``info`` that are not folded into channels under ``max_folded_size``.

  ``None`` folds every fixed axis (the legacy layer). Otherwise, while the
  fixed axes still to fold hold more than ``max_folded_size`` entries in all,
  the largest of them (the first, on ties) is taken out. Filter taps (3x3 = 9)
  stay folded at any bound of at least 9.

  Example:
    >>> from unf_lopt.spec import TensorInfo
    >>> dense = TensorInfo("Dense_0/kernel", (None, "h"), (3136, 256))
    >>> large_fixed_positions(dense, 32), large_fixed_positions(dense, None)
    ((0,), ())
    >>> conv = TensorInfo("Conv_0/kernel", (None, None, None, "c"), (3, 3, 3, 32))
    >>> large_fixed_positions(conv, 32), large_fixed_positions(conv, 16)
    ((), (0,))
  """
  if max_folded_size is None:
    return ()
  if max_folded_size < 1:
    raise ValueError(f"max_folded_size must be a positive int or None, got {max_folded_size!r}")
  folded = list(info.fixed_positions)
  taken = []
  while folded and math.prod(info.shape[p] for p in folded) > max_folded_size:
    largest = max(folded, key=lambda p: (info.shape[p], -p))
    folded.remove(largest)
    taken.append(largest)
  return tuple(sorted(taken))


def share_large_fixed_axes(infos: list[TensorInfo], max_folded_size: int | None
                           ) -> list[TensorInfo]:
  """``infos`` with every large fixed axis named by its own :class:`SharedFixedAxis`.

  Small fixed axes stay ``FIXED`` (folded into channels); with
  ``max_folded_size=None`` nothing changes.
  """
  shared = []
  for info in infos:
    large = large_fixed_positions(info, max_folded_size)
    if large:
      axes = tuple(SharedFixedAxis(info.path, p) if p in large else name
                   for p, name in enumerate(info.axes))
      info = TensorInfo(info.path, axes, info.shape)
    shared.append(info)
  return shared


# Sinusoidal channels per large fixed axis, and the most large axes of one tensor that get them.
CHANNELS_PER_POSITIONAL_AXIS = 2
MAX_POSITIONAL_AXES = 2
POSITIONAL_CHANNELS = CHANNELS_PER_POSITIONAL_AXIS * MAX_POSITIONAL_AXES


def positional_channels(info: TensorInfo, max_folded_size: int | None, dtype=jnp.float32
                        ) -> jax.Array:
  """``[*shape, POSITIONAL_CHANNELS]``: where each entry sits along its large fixed axes.

  For each of the (at most ``MAX_POSITIONAL_AXES``, largest first) large fixed
  axes of size ``n``, entry ``i`` gets ``sin(pi * (i + 1/2) / n)`` and
  ``cos(pi * (i + 1/2) / n)``: a half turn, so every index of the axis has its
  own pair and neighbours are close. Unused channels are zero, and so is every
  channel of a tensor without large fixed axes. The channels are constant
  along permuted axes, so they keep the true symmetry.

  Example:
    >>> from unf_lopt.spec import TensorInfo
    >>> info = TensorInfo("Dense_0/kernel", (None, "h"), (40, 2))
    >>> x = positional_channels(info, 32)
    >>> x.shape, bool((x[0, 0] != x[1, 0]).any()), bool((x[0, 0] == x[0, 1]).all())
    ((40, 2, 4), True, True)
  """
  large = sorted(large_fixed_positions(info, max_folded_size),
                 key=lambda p: (-info.shape[p], p))[:MAX_POSITIONAL_AXES]
  # Built from iotas inside the trace, so that XLA fuses them rather than embedding
  # a constant as large as the tensor.
  channels = []
  for position in large:
    size = info.shape[position]
    angle = jnp.pi * (jnp.arange(size, dtype=dtype) + 0.5) / size
    shape = [1] * len(info.shape)
    shape[position] = size
    for wave in (jnp.sin(angle), jnp.cos(angle)):
      channels.append(jnp.broadcast_to(wave.reshape(shape), info.shape))
  channels += [jnp.zeros(info.shape, dtype)] * (POSITIONAL_CHANNELS - len(channels))
  return jnp.stack(channels, axis=-1)


def mean_pool(x: jax.Array, letters: str, kept: str) -> jax.Array:
  """Means ``x`` (one distinct letter per axis, channels last) down to ``kept``.

  Leading pooled axes over a long inner block go through a matrix-vector
  product: there XLA's CPU reduction is up to 40x slower (a ``[32, 32000, 32]``
  head kernel pooled over its first axis). Short blocks reduce natively,
  which is faster, also under ``vmap``.
  """
  leading = 0
  while leading < len(letters) and letters[leading] not in kept:
    leading += 1
  if leading and math.prod(x.shape[leading:]) >= LONG_INNER_BLOCK:
    count = math.prod(x.shape[:leading])
    weights = jnp.full((count,), 1.0 / count, x.dtype)
    x = (weights @ x.reshape(count, -1)).reshape(x.shape[leading:])
    letters = letters[leading:]
  if letters == kept:
    return x
  count = math.prod(x.shape[i] for i, letter in enumerate(letters) if letter not in kept)
  y = jnp.einsum(f"{letters}...->{kept}...", x)
  return y / count if count > 1 else y


def apply_reduction(x: jax.Array, reduction: basis.Reduction) -> jax.Array:
  """Reads diagonals and mean-pools: ``[*permuted, C] -> [*carried, C]``."""
  letters = "".join(_LABEL_LETTERS[label] for label in reduction.in_labels)
  kept = "".join(_LABEL_LETTERS[label] for label in reduction.carried)
  if len(set(letters)) == len(letters):
    return mean_pool(x, letters, kept)
  pooled = set(reduction.in_labels) - set(reduction.carried)
  y = jnp.einsum(f"{letters}...->{kept}...", x)
  count = math.prod(x.shape[reduction.in_labels.index(label)] for label in pooled)
  return y / count if count > 1 else y


class Reductions:
  """Computes reductions once each, deriving wider pools from narrower ones.

  A diagonal-free reduction (pure mean pooling) of an input is computed from
  an already pooled version of the same input when one exists (a mean of means
  over equal-sized blocks is the mean), so a large tensor is read once per
  distinct "keep" pattern rather than once per reduction.
  """

  def __init__(self, folded: list[jax.Array]):
    self.folded = folded
    self.done: dict[basis.Reduction, jax.Array] = {}
    self.pooled: dict[int, list[tuple[tuple[int, ...], jax.Array]]] = {}

  def __call__(self, reduction: basis.Reduction) -> jax.Array:
    if reduction not in self.done:
      self.done[reduction] = self._compute(reduction)
    return self.done[reduction]

  def prefetch(self, reductions: Iterable[basis.Reduction]) -> None:
    """Computes ``reductions``, those that keep the most axes first."""
    for r in sorted(set(reductions), key=lambda r: -len(r.carried)):
      self(r)

  def _compute(self, reduction: basis.Reduction) -> jax.Array:
    labels, x = reduction.in_labels, self.folded[reduction.in_index]
    if len(set(labels)) != len(labels) or labels == reduction.carried:
      return apply_reduction(x, reduction)
    kept = tuple(labels.index(label) for label in reduction.carried)
    sources = [(k, y) for k, y in self.pooled.get(reduction.in_index, []) if set(kept) < set(k)]
    if sources:
      source_kept, source = min(sources, key=lambda item: item[1].size)
      result = mean_pool(source, "".join(_LABEL_LETTERS[p] for p in source_kept),
                         "".join(_LABEL_LETTERS[p] for p in kept))
    else:
      result = apply_reduction(x, reduction)
    self.pooled.setdefault(reduction.in_index, []).append((kept, result))
    return result


def _delta(size: int, rank: int, dtype) -> np.ndarray:
  delta = np.zeros((size,) * rank, dtype=dtype)
  delta[(np.arange(size),) * rank] = 1
  return delta


def embed(z: jax.Array, group: basis.OutputGroup, out_shape: tuple[int, ...]) -> jax.Array:
  """Writes ``[*carried, C]`` into the output pattern of ``group``.

  Output-only labels on one axis broadcast (left as size-1 axes); labels on
  several output axes write a diagonal.
  """
  positions: dict[int, list[int]] = {}
  for position, label in enumerate(group.out_labels):
    positions.setdefault(label, []).append(position)
  operands = [z]
  subscripts = ["".join(_POSITION_LETTERS[positions[label][0]] for label in group.carried)]
  for where in positions.values():
    if len(where) > 1:
      operands.append(_delta(out_shape[where[0]], len(where), z.dtype))
      subscripts.append("".join(_POSITION_LETTERS[p] for p in where))
  materialized = [p for p, label in enumerate(group.out_labels)
                  if label in group.carried or len(positions[label]) > 1]
  target = "".join(_POSITION_LETTERS[p] for p in materialized)
  if len(operands) > 1 or subscripts[0] != target:
    z = jnp.einsum(",".join(s + "..." for s in subscripts) + f"->{target}...", *operands)
  shape = [out_shape[p] if p in materialized else 1 for p in range(len(out_shape))]
  return z.reshape(*shape, z.shape[-1])


class KernelTerm(NamedTuple):
  """One basis term of a compiled layer and the kernel rows holding its coefficients."""

  out_index: int
  group_index: int
  reduction: basis.Reduction
  rows: tuple[int, int]  # [start, stop) rows of the output tensor's kernel


def _is_transpose(reduction: basis.Reduction) -> bool:
  labels = reduction.in_labels
  return len(set(labels)) == len(labels) == len(reduction.carried) and labels != reduction.carried


def _projecting_is_cheaper(terms: list[KernelTerm], out_widths: list[int],
                           in_width: int) -> bool:
  """Compares per-entry multiply-adds of the two orders for one input tensor."""
  columns = sum(out_widths[t.out_index] for t in terms)
  identity_columns = sum(out_widths[t.out_index] for t in terms
                         if t.reduction.in_labels == t.reduction.carried)
  reductions = len({t.reduction for t in terms if t.reduction.in_labels != t.reduction.carried})
  pool_first = in_width * (reductions + identity_columns)
  project_first = in_width * columns + columns
  return project_first < pool_first


def project_then_pool(folded: list[jax.Array], columns: KernelColumns,
                      terms: list[KernelTerm], order: str) -> dict[KernelTerm, jax.Array]:
  """Terms whose channel map is cheaper before their reduction, mapped to their result.

  Pooling then projecting reads each input once per distinct reduction and
  maps channels on the (small) pooled tensors. Projecting first maps each
  input to all the columns its terms need, then pools thin tensors; it wins
  when the terms of an input need few columns in all. A transpose of a wide
  input is always cheaper after projecting. Both orders give the same sum.

  Args:
    folded: the input tensors, fixed axes folded into channels.
    columns: the kernels (one ``[rows, out_width]`` per output tensor) and
      the folded channel count of each output tensor.
    terms: every basis term, in kernel row order.
    order: ``"auto"``, ``"pool_first"`` (project nothing here) or
      ``"project_first"`` (project every term).
  """
  out_widths = columns.out_widths
  by_input: dict[int, list[KernelTerm]] = {}
  for t in terms:
    by_input.setdefault(t.reduction.in_index, []).append(t)
  chosen: dict[int, list[KernelTerm]] = {}
  for in_index, mine in by_input.items():
    if order == "pool_first":
      continue
    if order == "project_first" or _projecting_is_cheaper(mine, out_widths,
                                                          folded[in_index].shape[-1]):
      chosen[in_index] = mine
    else:
      transposes = [t for t in mine if _is_transpose(t.reduction)
                    and out_widths[t.out_index] < folded[in_index].shape[-1]]
      if transposes:  # the identity terms share the one read of the input
        chosen[in_index] = transposes + [t for t in mine
                                         if t.reduction.in_labels == t.reduction.carried]
  projected = {}
  for in_index, mine in chosen.items():
    mine = sorted(mine, key=lambda t: (t.reduction.in_labels, t.reduction.carried))
    y = folded[in_index] @ columns(mine)
    start = 0
    while start < len(mine):
      stop = start
      while stop < len(mine) and mine[stop].reduction == mine[start].reduction:
        stop += 1
      widths = [out_widths[t.out_index] for t in mine[start:stop]]
      begin = sum(out_widths[t.out_index] for t in mine[:start])
      block = apply_reduction(y[..., begin:begin + sum(widths)], mine[start].reduction)
      offset = 0
      for t, width in zip(mine[start:stop], widths):
        projected[t] = block[..., offset:offset + width]
        offset += width
      start = stop
  return projected


class KernelColumns:
  """Gathers the kernel rows of several terms side by side, as one ``[C_in, sum of widths]`` matrix.

  One gather from all kernels at once rather than a slice per term (each an
  operation for XLA to compile); a single term's rows are a plain slice.
  """

  def __init__(self, kernels: list[jax.Array], out_widths: list[int]):
    self.kernels = kernels
    self.out_widths = out_widths
    self.bases = np.cumsum([0] + [k.size for k in kernels])
    self._flat = None

  def __call__(self, terms: list[KernelTerm]) -> jax.Array:
    if len(terms) == 1:
      return self.kernels[terms[0].out_index][slice(*terms[0].rows)]
    if self._flat is None:
      self._flat = jnp.concatenate([k.reshape(-1) for k in self.kernels])
    blocks = []
    for out_index, _, _, rows in terms:
      width = self.out_widths[out_index]
      row_ids = np.arange(*rows)[:, None]
      blocks.append(self.bases[out_index] + row_ids * width + np.arange(width)[None, :])
    return self._flat[np.concatenate(blocks, axis=1)]
