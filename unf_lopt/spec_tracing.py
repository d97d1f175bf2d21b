"""Which parameter axes a computation lets us permute: a walk over its jaxpr.

:func:`trace_axis_classes` traces ``apply_fn(params, *example_args)`` with
:func:`jax.make_jaxpr` and puts every axis of every value of the computation
(params, inputs, intermediates, outputs) into a union-find structure. Two axes
end up in one *class* when the computation only stays equivariant if they are
permuted together (a ``dot_general`` contraction, two operands of an ``add``);
a class is *fixed* when some operation needs the axis in its place (a reshape
that merges it, a slice, a convolution's spatial axes, a constant that varies
along it, an operation this walker does not know). Each fixed class keeps the
first reason it was fixed, for error messages.

The invariant behind every rule: if each class's axes are all permuted by one
permutation (and fixed classes by none), every value of the computation comes
out permuted along its own axes' classes. So the outputs, whose axes are fixed
by default, do not change. Rules are sound first: when unsure, an axis is
fixed; tying two axes only shrinks the group of symmetries, which stays a true
symmetry; axes of different sizes are never tied (a size-1 axis that is
broadcast gets a fresh class: the value is constant along the broadcast axis).

Loops need no fixpoint: classes are global, so one walk over a loop body,
with its carry tied to the loop's, already forces every equality it implies.

Example:
  >>> import jax.numpy as jnp
  >>> params = {"w1": jnp.ones((3, 4)), "w2": jnp.ones((4, 2))}
  >>> traced = trace_axis_classes(lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"], params,
  ...                             (jnp.ones((5, 3)),))
  >>> traced.axis_names()
  [(None, 'w1:1'), ('w1:1', None)]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax._src import core as jax_core
from jax._src import source_info_util

from unf_lopt.spec import FIXED, path_to_str

PyTree = Any

_ELEMENTWISE = frozenset("""
    abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp conj convert_element_type
    copy copy_p cos cosh digamma div eq erf erf_inv erfc exp exp2 expm1 floor ge gt igamma
    igammac imag integer_pow is_finite le lgamma log log1p logistic lt max min mul ne neg
    nextafter not or population_count pow real reduce_precision rem round rsqrt select_n
    shift_left shift_right_arithmetic shift_right_logical sign sin sinh sqrt square
    stop_gradient sub tan tanh xor
    """.split())
_REDUCTIONS = frozenset(
    ["reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or",
     "reduce_xor"])
_CUMULATIVE = frozenset(["cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"])
_IDENTITY_PER_OPERAND = frozenset(["optimization_barrier", "device_put"])
_CALLS = frozenset(["jit", "pjit", "closed_call", "core_call", "remat", "checkpoint",
                    "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr",
                    "custom_lin", "remat2"])
_REDUCE_WINDOWS = frozenset(["reduce_window_sum", "reduce_window_max", "reduce_window_min"])


def _shape(atom) -> tuple[int, ...]:
  return tuple(int(d) for d in getattr(atom.aval, "shape", ()))


def _where(eqn) -> str:
  """The user's line behind an equation: the first frame outside jax and flax."""
  try:
    for frame in source_info_util.user_frames(eqn.source_info.traceback):
      name = frame.file_name.replace("\\", "/")
      if "/flax/" not in name and "/jax/" not in name and "/optax/" not in name:
        return f"{frame.file_name}:{frame.start_line} ({frame.function_name})"
    return source_info_util.summarize(eqn.source_info) or "an unknown line"
  except Exception:  # pylint: disable=broad-except  # only a message; never fail on it
    return "an unknown line"


class _UnionFind:
  """Axis nodes with sizes; a class is fixed once it has a reason."""

  def __init__(self):
    self.parent: list[int] = []
    self.size: list[int] = []
    self.reason: dict[int, str] = {}  # root -> why the class is fixed

  def new(self, size: int) -> int:
    self.parent.append(len(self.parent))
    self.size.append(size)
    return len(self.parent) - 1

  def find(self, node: int) -> int:
    parent = self.parent
    while parent[node] != node:
      parent[node] = parent[parent[node]]
      node = parent[node]
    return node

  def is_fixed(self, node: int) -> bool:
    return self.find(node) in self.reason

  def fix(self, node: int, reason: str | Callable[[], str]) -> None:
    root = self.find(node)
    if root not in self.reason:
      self.reason[root] = reason() if callable(reason) else reason

  def union(self, a: int, b: int, reason: Callable[[], str]) -> None:
    if self.size[a] != self.size[b]:
      # Never tie axes of different sizes; fixing both is always sound.
      self.fix(a, reason)
      self.fix(b, reason)
      return
    ra, rb = self.find(a), self.find(b)
    if ra == rb:
      return
    if ra > rb:  # keep the older node as the root: deterministic names and reasons
      ra, rb = rb, ra
    self.parent[rb] = ra
    if rb in self.reason:
      self.reason.setdefault(ra, self.reason.pop(rb))


def _varies_along(values: np.ndarray, axis: int) -> bool:
  first = np.take(values, [0], axis=axis)
  try:
    return not np.array_equal(values, np.broadcast_to(first, values.shape), equal_nan=True)
  except TypeError:
    return not np.array_equal(values, np.broadcast_to(first, values.shape))


class _Walker:
  """Applies the propagation rules to the equations of a jaxpr (and its sub-jaxprs)."""

  def __init__(self):
    self.uf = _UnionFind()

  # -- nodes -------------------------------------------------------------------

  def fresh(self, shape: Sequence[int]) -> list[int]:
    return [self.uf.new(int(size)) for size in shape]

  def constant_nodes(self, value, where: str) -> list[int]:
    """Axes of a constant: fixed where its values vary (a position table), else free."""
    shape = tuple(int(d) for d in np.shape(value))
    nodes = self.fresh(shape)
    try:
      values = np.asarray(value)
    except Exception:  # pylint: disable=broad-except  # e.g. PRNG key arrays
      values = None
    for axis, node in enumerate(nodes):
      if shape[axis] <= 1:
        continue
      if values is None or values.dtype == object or _varies_along(values, axis):
        self.uf.fix(node, f"a constant of shape {shape} that varies along axis {axis} "
                          f"({where})")
    return nodes

  def read(self, env: dict, atom, where: Callable[[], str]) -> list[int]:
    if isinstance(atom, jax_core.Literal):
      return self.constant_nodes(atom.val, where())
    return env[atom]

  # -- helpers for rules -------------------------------------------------------

  def tie(self, a: int, b: int, why: Callable[[], str]) -> None:
    # A size-1 axis meets a size-n one where a primitive broadcasts implicitly (``add`` of
    # (2, 3) and (1, 3)): the size-1 operand is constant along that axis, so no tie is needed.
    if self.uf.size[a] > 1 and self.uf.size[b] > 1:
      self.uf.union(a, b, why)

  def fix_all(self, node_lists: Sequence[Sequence[int]], why: Callable[[], str]) -> None:
    for nodes in node_lists:
      for node in nodes:
        self.uf.fix(node, why)

  # -- walking -----------------------------------------------------------------

  def run(self, jaxpr, consts: Sequence[Any], in_nodes: Sequence[list[int]]) -> list[list[int]]:
    """Walks ``jaxpr`` with its invars bound to ``in_nodes``; returns the outvars' nodes."""
    env: dict = {}
    for var, value in zip(jaxpr.constvars, consts):
      env[var] = self.constant_nodes(value, "a constant closed over by the computation")
    for var, nodes in zip(jaxpr.invars, in_nodes):
      env[var] = list(nodes)
    for eqn in jaxpr.eqns:
      why = _Reason(eqn)
      ins = [self.read(env, atom, why.where) for atom in eqn.invars]
      outs = [self.fresh(_shape(var)) for var in eqn.outvars]
      self.apply_rule(eqn, ins, outs, why)
      for var, nodes in zip(eqn.outvars, outs):
        if not isinstance(var, jax_core.DropVar):
          env[var] = nodes
    return [self.read(env, atom, lambda: "an output literal") for atom in jaxpr.outvars]

  def call(self, closed_or_open, ins, why) -> list[list[int]] | None:
    jaxpr = getattr(closed_or_open, "jaxpr", closed_or_open)
    consts = getattr(closed_or_open, "consts", ())
    if len(jaxpr.invars) != len(ins):
      return None
    for var, nodes in zip(jaxpr.invars, ins):
      if _shape(var) != tuple(self.uf.size[n] for n in nodes):
        return None
    return self.run(jaxpr, consts, ins)

  def tie_lists(self, a: Sequence[list[int]], b: Sequence[list[int]], why) -> None:
    for xs, ys in zip(a, b):
      if len(xs) != len(ys):
        self.fix_all([xs, ys], why)
        continue
      for x, y in zip(xs, ys):
        self.tie(x, y, why)

  def apply_rule(self, eqn, ins, outs, why: "_Reason") -> None:
    name = eqn.primitive.name
    params = eqn.params
    handler = getattr(self, f"rule_{name}", None)
    if name in _ELEMENTWISE:
      self.elementwise(ins, outs, why)
    elif name in _REDUCTIONS:
      self.reduction(ins, outs, params["axes"], why, fix_reduced=False)
    elif name in ("argmax", "argmin"):
      self.reduction(ins, outs, params["axes"], why, fix_reduced=True)
    elif name in _CUMULATIVE:
      self.along_axis(ins, outs, [params["axis"]], why)
    elif name in _IDENTITY_PER_OPERAND and len(ins) == len(outs):
      self.tie_lists(ins, outs, why)
    elif name in _REDUCE_WINDOWS:
      self.reduce_window(eqn, ins, outs, why)
    elif name in _CALLS:
      self.call_rule(eqn, ins, outs, why)
    elif handler is not None:
      handler(eqn, ins, outs, why)
    else:
      self.unhandled(ins, outs, why)

  def unhandled(self, ins, outs, why) -> None:
    self.fix_all([*ins, *outs], why.unknown)

  # -- rules -------------------------------------------------------------------

  def elementwise(self, ins, outs, why) -> None:
    for out in outs:
      for operand in ins:
        if not operand:
          continue  # a scalar broadcast by the primitive itself
        if len(operand) != len(out):
          self.fix_all([operand, out], why)
          continue
        for a, b in zip(operand, out):
          self.tie(a, b, why)

  def reduction(self, ins, outs, axes, why, *, fix_reduced: bool) -> None:
    operand, = ins[:1]
    kept = [n for i, n in enumerate(operand) if i not in axes]
    if fix_reduced:
      self.fix_all([[operand[i] for i in axes]], why)
    for out in outs:
      self.tie_lists([kept], [out], why)

  def along_axis(self, ins, outs, axes, why) -> None:
    """The result depends on the order along ``axes``: fix them; tie the others."""
    for nodes in (*ins, *outs):
      for axis in axes:
        if nodes:
          self.uf.fix(nodes[axis], why)
    reference = ins[0]
    for nodes in (*ins[1:], *outs):
      if len(nodes) != len(reference):
        self.fix_all([reference, nodes], why)
        continue
      for axis, (a, b) in enumerate(zip(reference, nodes)):
        if axis not in axes:
          self.tie(a, b, why)

  def rule_sort(self, eqn, ins, outs, why) -> None:
    self.along_axis(ins, outs, [eqn.params["dimension"]], why)

  def rule_top_k(self, eqn, ins, outs, why) -> None:
    rank = len(ins[0])
    self.along_axis(ins, outs, [rank - 1], why)

  def rule_broadcast_in_dim(self, eqn, ins, outs, why) -> None:
    operand, out = ins[0], outs[0]
    if len(ins) > 1:  # dynamic shapes
      self.unhandled(ins, outs, why)
      return
    for i, dim in enumerate(eqn.params["broadcast_dimensions"]):
      if self.uf.size[operand[i]] == self.uf.size[out[dim]]:
        self.tie(operand[i], out[dim], why)
      # else: a size-1 axis broadcast to size n: constant along it, a fresh class.

  def rule_reshape(self, eqn, ins, outs, why) -> None:
    operand, out = ins[0], outs[0]
    if eqn.params.get("dimensions") is not None or len(ins) > 1:
      self.unhandled(ins, outs, why)
      return
    self.map_reshape(operand, out, why)

  def map_reshape(self, operand: list[int], out: list[int], why) -> None:
    """Ties axes that a reshape keeps whole; fixes axes it merges or splits."""
    sizes = self.uf.size
    a = [n for n in operand if sizes[n] > 1]
    b = [n for n in out if sizes[n] > 1]
    i = j = 0
    while i < len(a) and j < len(b):
      group_a, group_b = [a[i]], [b[j]]
      product_a, product_b = sizes[a[i]], sizes[b[j]]
      i, j = i + 1, j + 1
      while product_a != product_b:
        if product_a < product_b and i < len(a):
          group_a.append(a[i])
          product_a *= sizes[a[i]]
          i += 1
        elif product_b < product_a and j < len(b):
          group_b.append(b[j])
          product_b *= sizes[b[j]]
          j += 1
        else:
          break
      if len(group_a) == 1 and len(group_b) == 1 and product_a == product_b:
        self.tie(group_a[0], group_b[0], why)
      else:
        self.fix_all([group_a, group_b], why)
    self.fix_all([a[i:], b[j:]], why)

  def rule_squeeze(self, eqn, ins, outs, why) -> None:
    dims = {d % len(ins[0]) for d in eqn.params["dimensions"]}
    kept = [n for i, n in enumerate(ins[0]) if i not in dims]
    self.tie_lists([kept], outs, why)

  def rule_expand_dims(self, eqn, ins, outs, why) -> None:
    self.map_reshape(ins[0], outs[0], why)

  def rule_transpose(self, eqn, ins, outs, why) -> None:
    operand, out = ins[0], outs[0]
    for i, source in enumerate(eqn.params["permutation"]):
      self.tie(operand[source], out[i], why)

  def rule_dot_general(self, eqn, ins, outs, why) -> None:
    lhs, rhs = ins[:2]
    out = outs[0]
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
    for a, b in zip(lhs_contract, rhs_contract):
      self.tie(lhs[a], rhs[b], why)
    for k, (a, b) in enumerate(zip(lhs_batch, rhs_batch)):
      self.tie(lhs[a], rhs[b], why)
      self.tie(lhs[a], out[k], why)
    lhs_free = [n for i, n in enumerate(lhs) if i not in lhs_contract and i not in lhs_batch]
    rhs_free = [n for i, n in enumerate(rhs) if i not in rhs_contract and i not in rhs_batch]
    self.tie_lists([lhs_free + rhs_free], [out[len(lhs_batch):]], why)

  def rule_slice(self, eqn, ins, outs, why) -> None:
    operand, out = ins[0], outs[0]
    strides = eqn.params["strides"] or (1,) * len(operand)
    for axis, (start, limit, stride) in enumerate(zip(eqn.params["start_indices"],
                                                      eqn.params["limit_indices"], strides)):
      if start == 0 and limit == self.uf.size[operand[axis]] and stride in (None, 1):
        self.tie(operand[axis], out[axis], why)
      else:
        self.fix_all([[operand[axis], out[axis]]], why)

  def rule_dynamic_slice(self, eqn, ins, outs, why) -> None:
    operand, out = ins[0], outs[0]
    self.fix_all(ins[1:], why)
    for axis, size in enumerate(eqn.params["slice_sizes"]):
      if size == self.uf.size[operand[axis]]:  # whole axis: the start is clamped to 0
        self.tie(operand[axis], out[axis], why)
      else:
        self.fix_all([[operand[axis], out[axis]]], why)

  def rule_dynamic_update_slice(self, eqn, ins, outs, why) -> None:
    operand, update, out = ins[0], ins[1], outs[0]
    self.fix_all(ins[2:], why)
    for axis in range(len(operand)):
      group = [operand[axis], update[axis], out[axis]]
      if self.uf.size[update[axis]] == self.uf.size[operand[axis]]:
        self.tie(operand[axis], update[axis], why)
        self.tie(operand[axis], out[axis], why)
      else:
        self.fix_all([group], why)

  def rule_pad(self, eqn, ins, outs, why) -> None:
    operand, out = ins[0], outs[0]
    for axis, config in enumerate(eqn.params["padding_config"]):
      if tuple(config) == (0, 0, 0):
        self.tie(operand[axis], out[axis], why)
      else:
        self.fix_all([[operand[axis], out[axis]]], why)

  def rule_rev(self, eqn, ins, outs, why) -> None:
    self.along_axis(ins, outs, list(eqn.params["dimensions"]), why)

  def rule_concatenate(self, eqn, ins, outs, why) -> None:
    self.along_axis(ins, outs, [eqn.params["dimension"]], why)

  def rule_split(self, eqn, ins, outs, why) -> None:
    self.along_axis(ins, outs, [eqn.params["axis"]], why)

  def rule_tile(self, eqn, ins, outs, why) -> None:
    reps = eqn.params["reps"]
    if len(reps) != len(ins[0]):
      self.unhandled(ins, outs, why)
      return
    self.along_axis(ins, outs, [i for i, r in enumerate(reps) if r != 1], why)

  def rule_iota(self, eqn, ins, outs, why) -> None:
    self.fix_all(ins, why)
    self.uf.fix(outs[0][eqn.params["dimension"]], why)

  def rule_gather(self, eqn, ins, outs, why) -> None:
    operand, indices = ins[0], ins[1]
    out = outs[0]
    numbers = eqn.params["dimension_numbers"]
    slice_sizes = eqn.params["slice_sizes"]
    indexed = set(numbers.start_index_map) | set(getattr(numbers, "operand_batching_dims", ()))
    collapsed = set(numbers.collapsed_slice_dims) | set(
        getattr(numbers, "operand_batching_dims", ()))
    offset_operand_axes = [a for a in range(len(operand)) if a not in collapsed]
    if len(offset_operand_axes) != len(numbers.offset_dims):
      self.unhandled(ins, outs, why)
      return
    self.fix_all([indices], why)
    for axis, out_dim in zip(offset_operand_axes, numbers.offset_dims):
      if axis not in indexed and slice_sizes[axis] == self.uf.size[operand[axis]]:
        self.tie(operand[axis], out[out_dim], why)  # taken whole, e.g. an embedding's features
      else:
        self.fix_all([[operand[axis], out[out_dim]]], why)
    self.fix_all([[operand[a] for a in sorted(collapsed | indexed)]], why)
    self.fix_all([[out[d] for d in range(len(out)) if d not in numbers.offset_dims]], why)

  def rule_conv_general_dilated(self, eqn, ins, outs, why) -> None:
    lhs, rhs = ins[:2]
    out = outs[0]
    params = eqn.params
    numbers = params["dimension_numbers"]
    if (numbers is None or params["feature_group_count"] != 1
        or params["batch_group_count"] != 1):
      self.unhandled(ins, outs, why)
      return
    lhs_spec, rhs_spec, out_spec = numbers
    self.fix_all([[lhs[a] for a in lhs_spec[2:]], [rhs[a] for a in rhs_spec[2:]],
                  [out[a] for a in out_spec[2:]]], why)
    self.tie(lhs[lhs_spec[1]], rhs[rhs_spec[1]], why)
    self.tie(rhs[rhs_spec[0]], out[out_spec[1]], why)
    self.tie(lhs[lhs_spec[0]], out[out_spec[0]], why)

  def reduce_window(self, eqn, ins, outs, why) -> None:
    params = eqn.params
    operand, out = ins[0], outs[0]
    for axis in range(len(operand)):
      untouched = (params["window_dimensions"][axis] == 1 and params["window_strides"][axis] == 1
                   and tuple(params["padding"][axis]) == (0, 0)
                   and params["base_dilation"][axis] == 1
                   and params["window_dilation"][axis] == 1)
      if untouched:
        self.tie(operand[axis], out[axis], why)
      else:
        self.fix_all([[operand[axis], out[axis]]], why)

  def rule_cond(self, eqn, ins, outs, why) -> None:
    self.fix_all(ins[:1], why)
    for branch in eqn.params["branches"]:
      branch_outs = self.call(branch, ins[1:], why)
      if branch_outs is None:
        self.unhandled(ins, outs, why)
        return
      self.tie_lists(branch_outs, outs, why)

  def rule_while(self, eqn, ins, outs, why) -> None:
    params = eqn.params
    cond_n, body_n = params["cond_nconsts"], params["body_nconsts"]
    cond_consts, body_consts, carry = ins[:cond_n], ins[cond_n:cond_n + body_n], ins[
        cond_n + body_n:]
    body_outs = self.call(params["body_jaxpr"], [*body_consts, *carry], why)
    cond_outs = self.call(params["cond_jaxpr"], [*cond_consts, *carry], why)
    if body_outs is None or cond_outs is None:
      self.unhandled(ins, outs, why)
      return
    self.tie_lists(body_outs, carry, why)
    self.tie_lists(carry, outs, why)

  def rule_scan(self, eqn, ins, outs, why) -> None:
    params = eqn.params
    n_consts, n_carry = params["num_consts"], params["num_carry"]
    consts, carry, xs = ins[:n_consts], ins[n_consts:n_consts + n_carry], ins[n_consts + n_carry:]
    # Steps run in order along axis 0 of xs and ys: that axis stays in place.
    self.fix_all([x[:1] for x in xs] + [y[:1] for y in outs[n_carry:]], why)
    body_outs = self.call(params["jaxpr"], [*consts, *carry, *[x[1:] for x in xs]], why)
    if body_outs is None:
      self.unhandled(ins, outs, why)
      return
    self.tie_lists(body_outs[:n_carry], carry, why)
    self.tie_lists(carry, outs[:n_carry], why)
    self.tie_lists(body_outs[n_carry:], [y[1:] for y in outs[n_carry:]], why)

  def call_rule(self, eqn, ins, outs, why) -> None:
    inner = None
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
      if key in eqn.params:
        inner = eqn.params[key]
        break
    inner_outs = self.call(inner, ins, why) if inner is not None else None
    if inner_outs is None or len(inner_outs) != len(outs):
      self.unhandled(ins, outs, why)
      return
    self.tie_lists(inner_outs, outs, why)


class _Reason:
  """The reason an equation fixes axes, formatted only when a class first becomes fixed."""

  def __init__(self, eqn):
    self.eqn = eqn

  def where(self) -> str:
    return _where(self.eqn)

  def __call__(self) -> str:
    return f"'{self.eqn.primitive.name}' at {self.where()}"

  def unknown(self) -> str:
    return (f"'{self.eqn.primitive.name}' at {self.where()}, a primitive the spec inference "
            "does not model")


@dataclasses.dataclass
class TracedAxes:
  """The classes of the parameter axes of a traced computation.

  Attributes:
    paths: every parameter leaf's path (``path_to_str`` form), in flattening order.
    shapes: every parameter leaf's shape.
    classes: per leaf, the class (an int) of every axis.
    fixed_reasons: why a class is fixed, for every fixed class.
    input_classes: per data input leaf, the class of every axis.
    output_classes: per output leaf, the class of every axis.
    treedef: the treedef of the parameters as passed.
  """

  paths: list[str]
  shapes: list[tuple[int, ...]]
  classes: list[tuple[int, ...]]
  fixed_reasons: dict[int, str]
  input_classes: list[tuple[int, ...]]
  output_classes: list[tuple[int, ...]]
  treedef: Any

  def is_permutable(self, leaf: int, axis: int) -> bool:
    return self.shapes[leaf][axis] > 1 and self.classes[leaf][axis] not in self.fixed_reasons

  def class_names(self) -> dict[int, str]:
    """A readable, deterministic name per permutable class: its first tensor path and axis."""
    names: dict[int, str] = {}
    # Kernels before biases: 'Dense_0/kernel:1' reads better than 'Dense_0/bias:0'.
    order = sorted(range(len(self.paths)), key=lambda leaf: (-len(self.shapes[leaf]), leaf))
    for leaf in order:
      path, classes = self.paths[leaf], self.classes[leaf]
      for axis, cls in enumerate(classes):
        if self.is_permutable(leaf, axis) and cls not in names:
          names[cls] = f"{path}:{axis}"
    return names

  def axis_names(self) -> list[tuple]:
    """Per leaf, an axis-name tuple (``FIXED`` for fixed and size-1 axes)."""
    names = self.class_names()
    return [tuple(names[cls] if self.is_permutable(leaf, axis) else FIXED
                  for axis, cls in enumerate(classes))
            for leaf, classes in enumerate(self.classes)]


def trace_axis_classes(apply_fn: Callable[..., Any], params: PyTree, example_args: Sequence[Any],
                       *, fixed_io: bool = True) -> TracedAxes:
  """Traces ``apply_fn(params, *example_args)`` and returns its parameter axis classes.

  Args:
    apply_fn: the model; it reads ``params`` as its first argument.
    params: any pytree of arrays (boxed leaves such as ``nn.Partitioned`` are
      pytree nodes and are looked through).
    example_args: inputs of the right shapes and dtypes (values of floating
      inputs do not matter; the trace only reads shapes, and constants inside
      the model are read by value).
    fixed_io: fix every axis of the data inputs and of the outputs (the true
      symmetry of a model whose inputs and outputs mean something per index);
      ``False`` leaves them free, as the UNF paper permutes input features and
      output classes too.

  Returns:
    The classes, see :class:`TracedAxes`.
  """
  example_args = tuple(example_args)
  leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
  closed = jax.make_jaxpr(apply_fn)(params, *example_args)
  jaxpr = closed.jaxpr
  walker = _Walker()
  in_nodes = [walker.fresh(_shape(var)) for var in jaxpr.invars]
  n_params = len(leaves_with_path)
  if fixed_io:
    arg_paths = [jax.tree_util.keystr(p) for p, _ in
                 jax.tree_util.tree_flatten_with_path(example_args)[0]]
    for index, nodes in enumerate(in_nodes[n_params:]):
      label = f"example_args{arg_paths[index]}" if index < len(arg_paths) else "a data input"
      for axis, node in enumerate(nodes):
        walker.uf.fix(node, f"data input {label} axis {axis} (fixed_io=True)")
  out_nodes = walker.run(jaxpr, closed.consts, in_nodes)
  if fixed_io:
    for index, nodes in enumerate(out_nodes):
      for axis, node in enumerate(nodes):
        walker.uf.fix(node, f"output leaf {index} axis {axis} (fixed_io=True)")
  uf = walker.uf
  roots = lambda nodes: tuple(uf.find(n) for n in nodes)
  return TracedAxes(
      paths=[path_to_str(p) for p, _ in leaves_with_path],
      shapes=[_shape(var) for var in jaxpr.invars[:n_params]],
      classes=[roots(nodes) for nodes in in_nodes[:n_params]],
      fixed_reasons={root: reason for root, reason in uf.reason.items() if uf.find(root) == root},
      input_classes=[roots(nodes) for nodes in in_nodes[n_params:]],
      output_classes=[roots(nodes) for nodes in out_nodes],
      treedef=treedef)
