"""The UNF layer: the maximally expressive linear equivariant map of a weight space."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from unf_lopt import basis
from unf_lopt.layers import engine
from unf_lopt.spec import TensorInfo

PyTree = Any
ORDERS = ("auto", "pool_first", "project_first")
TENSOR_PAIRS = ("all", "linked")


class UNFLinear(nn.Module):
  """The maximally expressive linear equivariant layer of a weight space.

  Every (output tensor, input tensor) pair contributes one ``c_in x c_out``
  coefficient matrix per valid partition of their axes (UNF Algorithm 1); each
  output tensor has one bias per channel (per fixed index, if it has fixed
  axes). Coefficients of an output tensor are drawn from
  ``N(0, 1 / (c_in * number_of_terms))``. Pooled axes are averaged (mean, not
  sum), keeping activations scale-stable across widths.

  Attributes:
    out_channels: channels of every output tensor.
    use_bias: whether to add the per-tensor bias.
    param_dtype: dtype of the coefficients.
    order: where the channel map goes. ``"pool_first"`` reduces each input
      once per distinct reduction and then maps channels; ``"project_first"``
      maps each input to all the columns its terms need and then reduces;
      ``"auto"`` picks per input tensor by channel counts. Results agree.
    identity_share: ``None`` draws every coefficient from ``N(0, 1 / rows)``
      (all terms alike). A number in (0, 1) gives the identity term (each
      entry's own channels, the DeepSet-like part) that share of the output
      variance at initialisation and the other terms the rest; the span of
      the layer is the same.
    max_folded_size: ``None`` (default, the legacy layer) folds every fixed
      axis into channels, so kernels grow with the product of the fixed sizes
      of their input and output tensors. A number folds the fixed axes of a
      tensor only while they hold at most that many entries in all; each
      larger fixed axis gets a name of its own
      (:class:`~unf_lopt.layers.engine.SharedFixedAxis`) and the layer shares
      its weights over it, as over a permuted axis. The layer then commutes
      with permutations of those axes too, so it is still equivariant to the
      spec's symmetry; `unf_lopt.UpdateNet` adds positional channels to tell
      their indices apart.
    tensor_pairs: ``"all"`` (default, the UNF layer) has basis terms between
      every output and input tensor, so the layer grows with the square of
      the number of tensors. ``"linked"`` keeps the terms between tensors that
      share a permutation name (and each tensor's terms to itself) and
      replaces all other terms, which pool their input to an invariant and
      broadcast it, by one: a mean of every tensor over all its entries,
      mapped to each output tensor by a ``c_in x width`` matrix. A subset of
      the equivariant maps plus an invariant, so still equivariant.
  """

  out_channels: int
  use_bias: bool = True
  param_dtype: Any = jnp.float32
  order: str = "auto"
  identity_share: float | None = None
  max_folded_size: int | None = None
  tensor_pairs: str = "all"

  @nn.compact
  def __call__(self, features: PyTree, spec: PyTree) -> PyTree:
    if self.order not in ORDERS:
      raise ValueError(f"UNFLinear.order must be 'auto', 'pool_first' or 'project_first', "
                       f"got {self.order!r}")
    if self.tensor_pairs not in TENSOR_PAIRS:
      raise ValueError(f"UNFLinear.tensor_pairs must be 'all' or 'linked', "
                       f"got {self.tensor_pairs!r}")
    leaves, infos, treedef, in_channels = engine.features_and_infos(features, spec)
    infos = engine.share_large_fixed_axes(infos, self.max_folded_size)
    folded = [engine.fold_fixed(x, info) for x, info in zip(leaves, infos)]
    plan = basis.compile_plan(tuple(
        tuple(info.axes[p] for p in info.permuted_positions) for info in infos))
    in_widths = [x.shape[-1] for x in folded]
    out_widths = [engine.fixed_size(info) * self.out_channels for info in infos]

    linked = self.tensor_pairs == "linked"
    # Every term, as (output, group, reduction, kernel rows), in kernel row order.
    terms = []
    for out_index, tensor_plan in enumerate(plan.tensors):
      offset = 0
      for group_index, group in enumerate(tensor_plan.groups):
        for r in group.reductions:
          if linked and not _are_linked(plan.permuted_axes, out_index, r.in_index):
            continue
          terms.append(engine.KernelTerm(out_index, group_index, r,
                                         (offset, offset + in_widths[r.in_index])))
          offset += in_widths[r.in_index]

    kernel_shapes, row_scales = [], []
    for out_index, out_width in enumerate(out_widths):
      mine = [t for t in terms if t.out_index == out_index]
      rows = mine[-1].rows[1] if mine else 0
      if linked:  # the global term's rows come last
        rows += in_channels
      kernel_shapes.append((rows, out_width))
      row_scales.append(_row_scales(mine, rows, plan.tensors[out_index], self.identity_share))
    draw = _JointNormalDraw(kernel_shapes, row_scales)
    kernels, biases = [], []
    for out_index, (info, shape) in enumerate(zip(infos, kernel_shapes)):
      kernel = self.param(_tensor_param_name("kernel", info), draw.initializer(out_index),
                          shape, self.param_dtype)
      kernels.append(kernel.astype(folded[0].dtype))
      if self.use_bias:
        biases.append(self.param(_tensor_param_name("bias", info), nn.initializers.zeros,
                                 (shape[1],), self.param_dtype).astype(folded[0].dtype))

    columns = engine.KernelColumns(kernels, out_widths)
    projected = engine.project_then_pool(folded, columns, terms, self.order)
    terms_of: dict[tuple[int, int], list[engine.KernelTerm]] = {}
    for t in terms:
      terms_of.setdefault((t.out_index, t.group_index), []).append(t)

    reduced = engine.Reductions(folded)
    reduced.prefetch(t.reduction for t in terms if t not in projected)
    if linked:  # every tensor's mean over all its entries, then the mean over tensors
      context = jnp.mean(jnp.stack([
          x.reshape(-1, in_channels).mean(axis=0) for x in leaves]), axis=0)
    outputs = []
    for out_index, (info, tensor_plan) in enumerate(zip(infos, plan.tensors)):
      out_shape = tuple(info.shape[p] for p in info.permuted_positions)
      total = None
      if linked:
        total = context @ kernels[out_index][-in_channels:]
      for group_index, group in enumerate(tensor_plan.groups):
        mine = terms_of.get((out_index, group_index))
        if not mine:
          continue
        # The group's pooled inputs side by side times their kernel rows stacked: one
        # matmul per output group (XLA compiles one operation per matmul).
        pooled = [t for t in mine if t not in projected]
        z = None
        if pooled:
          parts = [reduced(t.reduction) for t in pooled]
          rows = [kernels[out_index][start:end]
                  for start, end in _merged_ranges([t.rows for t in pooled])]
          z = (parts[0] if len(parts) == 1 else jnp.concatenate(parts, -1)) @ (
              rows[0] if len(rows) == 1 else jnp.concatenate(rows, 0))
        for t in mine:
          if t in projected:
            z = projected[t] if z is None else z + projected[t]
        contribution = engine.embed(z, group, out_shape)
        total = contribution if total is None else total + contribution
      total = jnp.broadcast_to(total, (*out_shape, out_widths[out_index]))
      if self.use_bias:
        total = total + biases[out_index]
      outputs.append(engine.unfold_fixed(total, info, self.out_channels))
    return treedef.unflatten(outputs)


def _merged_ranges(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
  """Consecutive ``[start, end)`` row ranges joined: one slice per run of adjacent rows.

  The terms of a group sit side by side in the kernel, so a group usually
  needs one slice, not one per term plus a concatenation (fewer operations for
  XLA to compile, and to fold when the kernel is a constant).

  >>> _merged_ranges([(0, 4), (4, 8), (12, 16)])
  [(0, 8), (12, 16)]
  """
  merged: list[tuple[int, int]] = []
  for start, end in ranges:
    if merged and merged[-1][1] == start:
      merged[-1] = (merged[-1][0], end)
    else:
      merged.append((start, end))
  return merged


def _are_linked(permuted_axes, out_index: int, in_index: int) -> bool:
  """Whether the tensors share a permutation name (a tensor is linked to itself)."""
  return out_index == in_index or bool(set(permuted_axes[out_index])
                                       & set(permuted_axes[in_index]))


def _tensor_param_name(kind: str, info: TensorInfo) -> str:
  return f"{kind}[{info.path}]"


def _row_scales(terms: list[engine.KernelTerm], rows: int, tensor_plan: basis.TensorPlan,
                identity_share: float | None) -> np.ndarray:
  """Standard deviation of each row of one output tensor's kernel at initialisation."""
  if identity_share is None:
    return np.full(rows, 1.0 / math.sqrt(max(rows, 1)), np.float32)
  if not 0.0 < identity_share < 1.0:
    raise ValueError(f"UNFLinear.identity_share must be in (0, 1), got {identity_share}")
  # Every output tensor has its identity term (itself, no pooling, no diagonal).
  identity = [t for t in terms if _is_identity(t, tensor_plan)]
  identity_rows = sum(t.rows[1] - t.rows[0] for t in identity)
  other_rows = rows - identity_rows
  if other_rows == 0:
    identity_share = 1.0
  scale = np.full(rows, math.sqrt((1.0 - identity_share) / max(other_rows, 1)), np.float32)
  for t in identity:
    scale[t.rows[0]:t.rows[1]] = math.sqrt(identity_share / identity_rows)
  return scale


class _JointNormalDraw:
  """Initialises all kernels of a layer from one normal draw, made by the first that needs it.

  Each ``jax.random`` call is a few hundred operations for XLA to compile; one
  draw per layer instead of one per output tensor cut the layer's init compile
  by about 0.5 s on the paper's RNN spec (8 kernels). The draw's key is the
  one flax hands the first kernel, so it depends on the layer's own rng stream only.
  """

  def __init__(self, shapes: list[tuple[int, int]], row_scales: list[np.ndarray]):
    self.shapes = shapes
    self.row_scales = row_scales
    self.kernels: list[jax.Array] | None = None

  def initializer(self, index: int):
    def init(key, shape, dtype=jnp.float32):
      if self.kernels is None:
        self.kernels = self._draw(key, dtype)
      return self.kernels[index]
    return init

  def _draw(self, key, dtype) -> list[jax.Array]:
    sizes = [rows * width for rows, width in self.shapes]
    flat = jax.random.normal(key, (sum(sizes),), dtype)
    kernels, start = [], 0
    for (rows, width), size, scale in zip(self.shapes, sizes, self.row_scales):
      block = flat[start:start + size].reshape(rows, width)
      kernels.append(block * jnp.asarray(scale, dtype)[:, None])
      start += size
    return kernels


def _is_identity(term: engine.KernelTerm, tensor_plan: basis.TensorPlan) -> bool:
  """Whether ``term`` maps each entry of its own tensor to the same entry (no pooling)."""
  group = tensor_plan.groups[term.group_index]
  labels = term.reduction.in_labels
  return (term.reduction.in_index == term.out_index and labels == group.out_labels
          and len(set(labels)) == len(labels))
