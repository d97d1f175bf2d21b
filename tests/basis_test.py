"""Tests for unf_lopt.basis: partitions, Bell counts, plan structure."""

import itertools
from collections import Counter

import numpy as np
import pytest

from unf_lopt import basis


def brute_force_partition_count(out_axes, in_axes):
  """Counts valid partitions by labelling axes with restricted growth strings."""
  axes = [*out_axes, *in_axes]
  count = 0
  for labels in itertools.product(range(len(axes)), repeat=len(axes)):
    if any(labels[i] > max(labels[:i], default=-1) + 1 for i in range(len(labels))):
      continue  # not a canonical labelling
    blocks = {}
    if all(blocks.setdefault(label, name) == name for label, name in zip(labels, axes)):
      count += 1
  return count


def test_bell_numbers():
  assert [basis.bell_number(n) for n in range(8)] == [1, 1, 2, 5, 15, 52, 203, 877]


@pytest.mark.parametrize("out_axes,in_axes,expected", [
    (("a", "b"), ("a", "b"), 4),
    (("a", "a"), ("a", "a"), 15),
    (("a", "b"), ("b",), 2),
    (("h", "w", "i", "o"), ("h", "w", "i", "o"), 16),
])
def test_paper_examples(out_axes, in_axes, expected):
  assert basis.num_basis_terms(out_axes, in_axes) == expected
  assert len(basis.valid_partitions(out_axes, in_axes)) == expected


def test_counts_match_bell_formula_and_brute_force_on_random_patterns():
  rng = np.random.default_rng(0)
  for _ in range(60):
    names = ["a", "b", "c"][:rng.integers(1, 4)]
    out_axes = tuple(rng.choice(names, size=rng.integers(0, 4)))
    in_axes = tuple(rng.choice(names, size=rng.integers(0, 4)))
    terms = basis.valid_partitions(out_axes, in_axes)
    counts = Counter((*out_axes, *in_axes))
    bell_product = int(np.prod([basis.bell_number(c) for c in counts.values()]))
    assert len(terms) == basis.num_basis_terms(out_axes, in_axes) == bell_product
    assert len(set(terms)) == len(terms), "partitions must be distinct"
    if len(out_axes) + len(in_axes) <= 5:
      assert len(terms) == brute_force_partition_count(out_axes, in_axes)


def test_fixed_axes_do_not_count():
  without_fixed = basis.num_basis_terms(("a",), ("a",))
  assert basis.num_basis_terms(("a", None), ("a", None, None)) == without_fixed
  with pytest.raises(ValueError, match="fold fixed axes"):
    basis.valid_partitions(("a", None), ("a",))


def test_plan_groups_every_term_once_and_shares_reductions():
  axes = (("n0", "n1"), ("n1",), ("n1", "n2"), ("n2",))
  plan = basis.compile_plan(axes)
  assert sum(t.num_terms for t in plan.tensors) == 32  # UNF paper, 64->32->10 MLP
  for tensor_plan in plan.tensors:
    grouped = [r for g in tensor_plan.groups for r in g.reductions]
    assert len(grouped) == tensor_plan.num_terms
    for group in tensor_plan.groups:
      # every member of a group produces a tensor over the same carried labels
      assert all(r.carried == group.carried for r in group.reductions)
  assert len(plan.reductions) < sum(t.num_terms for t in plan.tensors)
  assert basis.compile_plan(axes) is plan  # cached
