"""The basis of linear equivariant maps between weight-space tensors.

UNF Algorithm 1: for an output tensor with axis names ``o_1..o_k`` and an input
tensor with names ``i_1..i_m``, every basis map corresponds to a *valid
partition* of the ``k + m`` axes, one whose blocks only hold axes of a single
name. Give each block a label; the map is

    out[labels of output axes] = mean over input-only labels of in[labels of input axes]

A label repeated on the input side reads a diagonal; a label repeated on the
output side writes one (zero elsewhere); an output-only label broadcasts.
Pooling uses the *mean*, not the sum, so the scale of a term does not grow with
layer widths.

This module enumerates the partitions and compiles a whole weight space into a
:class:`LayerPlan`: every distinct input reduction (diagonal + pooling, one
``einsum``) is listed once, and the terms of each output tensor are grouped by
their output pattern so that a layer is one matmul per group and one
broadcast/diagonal embedding per group, whatever the number of terms.

Fixed axes (name ``None``) take no part here: layers fold them into channels.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Hashable, Iterator, Sequence

from unf_lopt.spec import FIXED

Label = int


@functools.lru_cache(maxsize=None)
def bell_number(n: int) -> int:
  """The number of set partitions of ``n`` items (Bell triangle)."""
  if n < 0:
    raise ValueError(f"bell_number of a negative count {n}")
  row = [1]
  for _ in range(n):
    next_row = [row[-1]]
    for value in row:
      next_row.append(next_row[-1] + value)
    row = next_row
  return row[0]


def num_basis_terms(out_axes: Sequence[Hashable], in_axes: Sequence[Hashable]) -> int:
  """Product over permutation names of Bell(c_out(name) + c_in(name)).

  Fixed axes (``None``) are channels and do not count.

  Example:
    >>> num_basis_terms(("a", "b"), ("a", "b")), num_basis_terms(("a", "a"), ("a", "a"))
    (4, 15)
  """
  counts: dict[Hashable, int] = {}
  for name in (*out_axes, *in_axes):
    if name is not FIXED:
      counts[name] = counts.get(name, 0) + 1
  total = 1
  for count in counts.values():
    total *= bell_number(count)
  return total


def set_partitions(items: Sequence[int]) -> Iterator[list[list[int]]]:
  """All set partitions of ``items`` (each as a list of blocks)."""
  if not items:
    yield []
    return
  first, rest = items[0], items[1:]
  for partition in set_partitions(rest):
    yield [[first], *partition]
    for index in range(len(partition)):
      yield [*partition[:index], [first, *partition[index]], *partition[index + 1:]]


@dataclasses.dataclass(frozen=True, order=True)
class Term:
  """One basis map, as canonical block labels of the output and input axes.

  Labels are numbered in order of first appearance, output axes first, so two
  partitions are equal exactly when their ``Term``s are.
  """

  out_labels: tuple[Label, ...]
  in_labels: tuple[Label, ...]

  @property
  def carried(self) -> tuple[Label, ...]:
    """Labels on both sides, ascending (= order of first output appearance)."""
    return tuple(sorted(set(self.out_labels) & set(self.in_labels)))

  @property
  def pooled(self) -> tuple[Label, ...]:
    return tuple(sorted(set(self.in_labels) - set(self.out_labels)))


def _canonical(labels: Sequence[Label]) -> tuple[Label, ...]:
  relabel: dict[Label, Label] = {}
  return tuple(relabel.setdefault(label, len(relabel)) for label in labels)


def valid_partitions(out_axes: Sequence[Hashable], in_axes: Sequence[Hashable]
                     ) -> list[Term]:
  """UNF Algorithm 1: the basis maps from an ``in_axes`` tensor to an ``out_axes`` one.

  Args:
    out_axes: permutation names of the output tensor's axes (no ``None``).
    in_axes: permutation names of the input tensor's axes (no ``None``).

  Returns:
    One :class:`Term` per valid partition, in a deterministic order.

  Example:
    >>> [(t.out_labels, t.in_labels) for t in valid_partitions(("a", "b"), ("b",))]
    [((0, 1), (2,)), ((0, 1), (1,))]
  """
  axes = [*out_axes, *in_axes]
  if any(name is FIXED for name in axes):
    raise ValueError("valid_partitions takes permuted axes only; fold fixed axes into channels")
  positions_by_name: dict[Hashable, list[int]] = {}
  for position, name in enumerate(axes):
    positions_by_name.setdefault(name, []).append(position)
  per_name = [list(set_partitions(positions)) for positions in positions_by_name.values()]
  terms = []
  for choice in itertools.product(*per_name):
    block_of = [0] * len(axes)
    block_id = 0
    for partition in choice:
      for block in partition:
        for position in block:
          block_of[position] = block_id
        block_id += 1
    labels = _canonical(block_of)
    terms.append(Term(labels[:len(out_axes)], labels[len(out_axes):]))
  return terms


@dataclasses.dataclass(frozen=True)
class Reduction:
  """Input side of a term: take diagonals and mean-pool an input tensor.

  The result has one axis per carried label (ascending) plus the channel axis.
  """

  in_index: int
  in_labels: tuple[Label, ...]
  carried: tuple[Label, ...]


@dataclasses.dataclass(frozen=True)
class OutputGroup:
  """Terms of one output tensor that share their output pattern.

  Their reductions have the same shape, so they are concatenated on the
  channel axis, multiplied by one slice of the output tensor's kernel, and
  embedded into the output (broadcast and diagonals) once.
  """

  out_labels: tuple[Label, ...]
  carried: tuple[Label, ...]
  reductions: tuple[Reduction, ...]


@dataclasses.dataclass(frozen=True)
class TensorPlan:
  """Everything one output tensor receives: groups, and each term's origin."""

  out_index: int
  groups: tuple[OutputGroup, ...]
  terms: tuple[tuple[int, Term], ...]  # (input index, term), in kernel row order

  @property
  def num_terms(self) -> int:
    return len(self.terms)


@dataclasses.dataclass(frozen=True)
class LayerPlan:
  """A compiled weight-space layer: one :class:`TensorPlan` per output tensor."""

  permuted_axes: tuple[tuple[Hashable, ...], ...]
  tensors: tuple[TensorPlan, ...]

  @property
  def reductions(self) -> tuple[Reduction, ...]:
    """Every distinct input reduction, each computed once per call."""
    seen = dict.fromkeys(r for t in self.tensors for g in t.groups for r in g.reductions)
    return tuple(seen)


def _reduction_of(in_index: int, term: Term) -> Reduction:
  return Reduction(in_index, term.in_labels, term.carried)


@functools.lru_cache(maxsize=256)
def compile_plan(permuted_axes: tuple[tuple[Hashable, ...], ...]) -> LayerPlan:
  """Compiles the all-pairs UNF layer of a weight space (Theorem 3.1).

  Args:
    permuted_axes: for every tensor, the names of its permuted axes (fixed
      axes already removed), in the flattening order of the weight space.

  Returns:
    A :class:`LayerPlan`; cached, so a spec is compiled once per process.
  """
  tensor_plans = []
  for out_index, out_axes in enumerate(permuted_axes):
    by_pattern: dict[tuple, list[tuple[int, Term]]] = {}
    for in_index, in_axes in enumerate(permuted_axes):
      for term in valid_partitions(out_axes, in_axes):
        by_pattern.setdefault((term.out_labels, term.carried), []).append((in_index, term))
    groups, ordered_terms = [], []
    for (out_labels, carried), members in sorted(by_pattern.items()):
      groups.append(OutputGroup(out_labels, carried,
                                tuple(_reduction_of(i, t) for i, t in members)))
      ordered_terms.extend(members)
    tensor_plans.append(TensorPlan(out_index, tuple(groups), tuple(ordered_terms)))
  return LayerPlan(tuple(permuted_axes), tuple(tensor_plans))
