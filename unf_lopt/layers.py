"""Layers over weight spaces: UNF, DeepSet and NFN (NP) linear maps, pooling.

Every layer takes ``(features, spec)``: ``features`` mirrors the parameter
pytree with a trailing channel axis (each leaf ``[*shape, C]``) and ``spec`` is
its weight-space specification (see :mod:`unf_lopt.spec`). Fixed axes
(``None``) are folded into channels, so a layer may mix them freely.

A batch of weight spaces goes through ``jax.vmap``:

  >>> import jax, jax.numpy as jnp
  >>> spec = {"w": ("a", "b"), "b": ("b",)}
  >>> x = {"w": jnp.ones((4, 2, 3, 2)), "b": jnp.ones((4, 3, 2))}  # batch of 4, 2 channels
  >>> layer = UNFLinear(5)
  >>> params = layer.init(jax.random.PRNGKey(0), jax.tree.map(lambda a: a[0], x), spec)
  >>> y = jax.vmap(lambda f: layer.apply(params, f, spec))(x)
  >>> y["w"].shape, y["b"].shape
  ((4, 2, 3, 5), (4, 3, 5))
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from unf_lopt import basis
from unf_lopt.spec import FIXED, SpecError, TensorInfo, tensor_infos

PyTree = Any
_LABEL_LETTERS = string.ascii_lowercase
_POSITION_LETTERS = string.ascii_uppercase
_LONG_INNER_BLOCK = 1 << 16  # entries; see _mean_pool


def _features_and_infos(features: PyTree, spec: PyTree
                        ) -> tuple[list[jax.Array], list[TensorInfo], Any, int]:
  infos, treedef = tensor_infos(spec, features, trailing_dims=1)
  leaves = treedef.flatten_up_to(features)
  channels = {int(leaf.shape[-1]) for leaf in leaves}
  if len(channels) != 1:
    detail = ", ".join(f"'{i.path}': {leaf.shape[-1]}" for i, leaf in zip(infos, leaves))
    raise SpecError(f"all feature tensors must have the same channel count; got {detail}")
  return leaves, infos, treedef, channels.pop()


def _fold_fixed(x: jax.Array, info: TensorInfo) -> jax.Array:
  """``[*shape, C]`` -> ``[*permuted_shape, prod(fixed_shape) * C]``."""
  permuted, fixed = info.permuted_positions, info.fixed_positions
  if not fixed:
    return x
  x = jnp.transpose(x, (*permuted, *fixed, x.ndim - 1))
  return x.reshape(*(info.shape[p] for p in permuted), -1)


def _unfold_fixed(y: jax.Array, info: TensorInfo, channels: int) -> jax.Array:
  """Inverse of :func:`_fold_fixed` for an output with ``channels`` channels."""
  permuted, fixed = info.permuted_positions, info.fixed_positions
  if not fixed:
    return y
  y = y.reshape(*(info.shape[p] for p in permuted), *(info.shape[p] for p in fixed), channels)
  order = (*permuted, *fixed)
  inverse = [order.index(axis) for axis in range(len(order))]
  return jnp.transpose(y, (*inverse, len(order)))


def _fixed_size(info: TensorInfo) -> int:
  return math.prod(info.shape[p] for p in info.fixed_positions)


def _mean_pool(x: jax.Array, letters: str, kept: str) -> jax.Array:
  """Means ``x`` (one distinct letter per axis, channels last) down to ``kept``.

  Leading pooled axes over a long inner block go through a matrix-vector
  product: there XLA's CPU reduction is up to 40x slower (a ``[32, 32000, 32]``
  head kernel pooled over its first axis). Short blocks reduce natively,
  which is faster, also under ``vmap``.
  """
  leading = 0
  while leading < len(letters) and letters[leading] not in kept:
    leading += 1
  if leading and math.prod(x.shape[leading:]) >= _LONG_INNER_BLOCK:
    count = math.prod(x.shape[:leading])
    weights = jnp.full((count,), 1.0 / count, x.dtype)
    x = (weights @ x.reshape(count, -1)).reshape(x.shape[leading:])
    letters = letters[leading:]
  if letters == kept:
    return x
  count = math.prod(x.shape[i] for i, letter in enumerate(letters) if letter not in kept)
  y = jnp.einsum(f"{letters}...->{kept}...", x)
  return y / count if count > 1 else y


def _reduce(x: jax.Array, reduction: basis.Reduction) -> jax.Array:
  """Reads diagonals and mean-pools: ``[*permuted, C] -> [*carried, C]``."""
  letters = "".join(_LABEL_LETTERS[label] for label in reduction.in_labels)
  kept = "".join(_LABEL_LETTERS[label] for label in reduction.carried)
  if len(set(letters)) == len(letters):
    return _mean_pool(x, letters, kept)
  pooled = set(reduction.in_labels) - set(reduction.carried)
  y = jnp.einsum(f"{letters}...->{kept}...", x)
  count = math.prod(x.shape[reduction.in_labels.index(label)] for label in pooled)
  return y / count if count > 1 else y


class _Reductions:
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

  def prefetch(self, reductions) -> None:
    """Computes ``reductions``, those that keep the most axes first."""
    for r in sorted(set(reductions), key=lambda r: -len(r.carried)):
      self(r)

  def _compute(self, reduction: basis.Reduction) -> jax.Array:
    labels, x = reduction.in_labels, self.folded[reduction.in_index]
    if len(set(labels)) != len(labels) or labels == reduction.carried:
      return _reduce(x, reduction)
    kept = tuple(labels.index(label) for label in reduction.carried)
    sources = [(k, y) for k, y in self.pooled.get(reduction.in_index, []) if set(kept) < set(k)]
    if sources:
      source_kept, source = min(sources, key=lambda item: item[1].size)
      result = _mean_pool(source, "".join(_LABEL_LETTERS[p] for p in source_kept),
                          "".join(_LABEL_LETTERS[p] for p in kept))
    else:
      result = _reduce(x, reduction)
    self.pooled.setdefault(reduction.in_index, []).append((kept, result))
    return result


def _delta(size: int, rank: int, dtype) -> np.ndarray:
  delta = np.zeros((size,) * rank, dtype=dtype)
  delta[(np.arange(size),) * rank] = 1
  return delta


def _embed(z: jax.Array, group: basis.OutputGroup, out_shape: tuple[int, ...]) -> jax.Array:
  """Writes ``[*carried, C]`` into the output pattern of ``group``.

  Output-only labels on one axis broadcast (left as size-1 axes); labels on
  several output axes write a diagonal.
  """
  positions: dict[int, list[int]] = {}
  for position, label in enumerate(group.out_labels):
    positions.setdefault(label, []).append(position)
  operands = [z]
  subscripts = ["".join(_POSITION_LETTERS[positions[label][0]] for label in group.carried)]
  for label, where in positions.items():
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


def _tensor_param_name(kind: str, info: TensorInfo) -> str:
  return f"{kind}[{info.path}]"


class _Member(NamedTuple):
  """One basis term of a compiled layer and where its coefficients live."""

  out_index: int
  group_index: int
  reduction: basis.Reduction
  rows: tuple[int, int]  # [start, stop) rows of the output tensor's kernel


def _is_transpose(reduction: basis.Reduction) -> bool:
  labels = reduction.in_labels
  return len(set(labels)) == len(labels) == len(reduction.carried) and labels != reduction.carried


def _projecting_is_cheaper(members, out_widths, in_width: int) -> bool:
  """Compares per-entry multiply-adds of the two orders for one input tensor."""
  columns = sum(out_widths[m.out_index] for m in members)
  identity_columns = sum(out_widths[m.out_index] for m in members
                         if m.reduction.in_labels == m.reduction.carried)
  reductions = len({m.reduction for m in members if m.reduction.in_labels != m.reduction.carried})
  pool_first = in_width * (reductions + identity_columns)
  project_first = in_width * columns + columns
  return project_first < pool_first


def _project_then_pool(folded, kernels, members: list[_Member], out_widths, order: str
                       ) -> dict[_Member, jax.Array]:
  """Terms whose channel map is cheaper before their reduction, mapped to their result.

  Pooling then projecting reads each input once per distinct reduction and
  maps channels on the (small) pooled tensors. Projecting first maps each
  input to all the columns its terms need, then pools thin tensors; it wins
  when the terms of an input need few columns in all. A transpose of a wide
  input is always cheaper after projecting. Both orders give the same sum.
  """
  by_input: dict[int, list] = {}
  for m in members:
    by_input.setdefault(m.reduction.in_index, []).append(m)
  chosen: dict[int, list] = {}
  for in_index, mine in by_input.items():
    if order == "pool_first":
      continue
    if order == "project_first" or _projecting_is_cheaper(mine, out_widths,
                                                          folded[in_index].shape[-1]):
      chosen[in_index] = mine
    else:
      transposes = [m for m in mine if _is_transpose(m.reduction)
                    and out_widths[m.out_index] < folded[in_index].shape[-1]]
      if transposes:  # the identity terms share the one read of the input
        chosen[in_index] = transposes + [m for m in mine
                                         if m.reduction.in_labels == m.reduction.carried]
  # One gather from all kernels at once, rather than a slice per term.
  flat = jnp.concatenate([k.reshape(-1) for k in kernels]) if chosen else None
  bases = np.cumsum([0] + [k.size for k in kernels])

  def kernels_by_columns(mine):
    blocks = []
    for out_index, _, _, rows in mine:
      width = out_widths[out_index]
      row_ids = np.arange(*rows)[:, None]
      blocks.append(bases[out_index] + row_ids * width + np.arange(width)[None, :])
    return flat[np.concatenate(blocks, axis=1)]

  projected = {}
  for in_index, mine in chosen.items():
    mine = sorted(mine, key=lambda m: (m.reduction.in_labels, m.reduction.carried))
    y = folded[in_index] @ kernels_by_columns(mine)
    start = 0
    while start < len(mine):
      stop = start
      while stop < len(mine) and mine[stop].reduction == mine[start].reduction:
        stop += 1
      widths = [out_widths[m.out_index] for m in mine[start:stop]]
      begin = sum(out_widths[m.out_index] for m in mine[:start])
      block = _reduce(y[..., begin:begin + sum(widths)], mine[start].reduction)
      offset = 0
      for m, width in zip(mine[start:stop], widths):
        projected[m] = block[..., offset:offset + width]
        offset += width
      start = stop
  return projected


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
  """

  out_channels: int
  use_bias: bool = True
  param_dtype: Any = jnp.float32
  order: str = "auto"
  identity_share: float | None = None

  @nn.compact
  def __call__(self, features: PyTree, spec: PyTree) -> PyTree:
    if self.order not in ("auto", "pool_first", "project_first"):
      raise ValueError(f"UNFLinear.order must be 'auto', 'pool_first' or 'project_first', "
                       f"got {self.order!r}")
    leaves, infos, treedef, _ = _features_and_infos(features, spec)
    folded = [_fold_fixed(x, info) for x, info in zip(leaves, infos)]
    plan = basis.compile_plan(tuple(
        tuple(info.axes[p] for p in info.permuted_positions) for info in infos))
    in_widths = [x.shape[-1] for x in folded]
    out_widths = [_fixed_size(info) * self.out_channels for info in infos]

    # Every term, as (output, group, reduction, kernel rows), in kernel row order.
    members = []
    for out_index, tensor_plan in enumerate(plan.tensors):
      offset = 0
      for group_index, group in enumerate(tensor_plan.groups):
        for r in group.reductions:
          members.append(_Member(out_index, group_index, r,
                                 (offset, offset + in_widths[r.in_index])))
          offset += in_widths[r.in_index]

    kernels, biases = [], []
    for out_index, (info, out_width) in enumerate(zip(infos, out_widths)):
      mine = [m for m in members if m.out_index == out_index]
      rows = mine[-1].rows[1] if mine else 0
      kernel = self.param(_tensor_param_name("kernel", info),
                          _kernel_init(mine, rows, plan.tensors[out_index], self.identity_share),
                          (rows, out_width), self.param_dtype)
      kernels.append(kernel.astype(folded[0].dtype))
      if self.use_bias:
        biases.append(self.param(_tensor_param_name("bias", info), nn.initializers.zeros,
                                 (out_width,), self.param_dtype).astype(folded[0].dtype))

    projected = _project_then_pool(folded, kernels, members, out_widths, self.order)
    members_of: dict[tuple[int, int], list[_Member]] = {}
    for m in members:
      members_of.setdefault((m.out_index, m.group_index), []).append(m)

    reduced = _Reductions(folded)
    reduced.prefetch(m.reduction for m in members if m not in projected)
    outputs = []
    for out_index, (info, tensor_plan) in enumerate(zip(infos, plan.tensors)):
      out_shape = tuple(info.shape[p] for p in info.permuted_positions)
      total = None
      for group_index, group in enumerate(tensor_plan.groups):
        mine = members_of[(out_index, group_index)]
        pooled = [m for m in mine if m not in projected]
        z = None
        if pooled:
          parts = [reduced(m.reduction) for m in pooled]
          rows = [kernels[out_index][slice(*m.rows)] for m in pooled]
          z = (parts[0] if len(parts) == 1 else jnp.concatenate(parts, -1)) @ (
              rows[0] if len(rows) == 1 else jnp.concatenate(rows, 0))
        for m in mine:
          if m in projected:
            z = projected[m] if z is None else z + projected[m]
        contribution = _embed(z, group, out_shape)
        total = contribution if total is None else total + contribution
      total = jnp.broadcast_to(total, (*out_shape, out_widths[out_index]))
      if self.use_bias:
        total = total + biases[out_index]
      outputs.append(_unfold_fixed(total, info, self.out_channels))
    return treedef.unflatten(outputs)


def _kernel_init(members, rows: int, tensor_plan, identity_share: float | None):
  """Initialiser of one output tensor's kernel, optionally favouring its identity term."""
  if identity_share is None:
    return nn.initializers.normal(stddev=1.0 / math.sqrt(max(rows, 1)))
  if not 0.0 < identity_share < 1.0:
    raise ValueError(f"UNFLinear.identity_share must be in (0, 1), got {identity_share}")
  # Every output tensor has its identity term (itself, no pooling, no diagonal).
  identity = [m for m in members if _is_identity(m, tensor_plan)]
  identity_rows = sum(m.rows[1] - m.rows[0] for m in identity)
  other_rows = rows - identity_rows
  if other_rows == 0:
    identity_share = 1.0
  scale = np.full(rows, math.sqrt((1.0 - identity_share) / max(other_rows, 1)), np.float32)
  for m in identity:
    scale[m.rows[0]:m.rows[1]] = math.sqrt(identity_share / identity_rows)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.normal(key, shape, dtype) * jnp.asarray(scale, dtype)[:, None]
  return init


def _is_identity(member, tensor_plan) -> bool:
  """Whether ``member`` maps each entry of its own tensor to the same entry (no pooling)."""
  group = tensor_plan.groups[member.group_index]
  labels = member.reduction.in_labels
  return (member.reduction.in_index == member.out_index and labels == group.out_labels
          and len(set(labels)) == len(labels))


class DeepSetLinear(nn.Module):
  """One ``c_in x c_out`` map and bias applied to every entry of every tensor.

  Equivariant to any permutation of the entries of the whole weight space
  (the "DS" layer of the UNF paper's learned optimizers: exactly
  ``c_in * c_out + c_out`` parameters). The spec is only validated.
  """

  out_channels: int
  use_bias: bool = True
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: PyTree, spec: PyTree) -> PyTree:
    leaves, _, treedef, in_channels = _features_and_infos(features, spec)
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (in_channels, self.out_channels), self.param_dtype)
    bias = (self.param("bias", nn.initializers.zeros, (self.out_channels,), self.param_dtype)
            if self.use_bias else None)
    outputs = []
    for x in leaves:
      y = x @ kernel.astype(x.dtype)
      outputs.append(y + bias.astype(x.dtype) if bias is not None else y)
    return treedef.unflatten(outputs)


def invariant_pool(features: PyTree, spec: PyTree) -> jax.Array:
  """Mean of every tensor over its permuted axes, concatenated to one vector.

  Fixed axes are kept (flattened into the vector), so the result is invariant
  to the spec's permutations and loses no fixed-axis information. For a spec
  without fixed axes the result is ``[n_tensors * C]``.
  """
  leaves, infos, _, _ = _features_and_infos(features, spec)
  pooled = []
  for x, info in zip(leaves, infos):
    pooled.append(jnp.mean(x, axis=info.permuted_positions).reshape(-1))
  return jnp.concatenate(pooled)


class InvariantPool(nn.Module):
  """Module form of :func:`invariant_pool` (no parameters)."""

  @nn.compact
  def __call__(self, features: PyTree, spec: PyTree) -> jax.Array:
    return invariant_pool(features, spec)


def pointwise(fn: Callable[[jax.Array], jax.Array]) -> Callable[[PyTree], PyTree]:
  """Lifts an elementwise function (e.g. ``jax.nn.relu``) to a weight space.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> pointwise(jax.nn.relu)({"w": jnp.array([-1.0, 2.0])})["w"]
    Array([0., 2.], dtype=float32)
  """
  return lambda features: jax.tree.map(fn, features)


# ---------------------------------------------------------------------------
# NFN "NP" layer (Zhou et al. 2023), written from its own equations.


class _Chain:
  """An MLP/CNN weight space: layer i has kernel ``[*filter, n_{i-1}, n_i]``, optional bias ``[n_i]``."""

  def __init__(self, infos: list[TensorInfo]):
    weights, biases = {}, {}
    for index, info in enumerate(infos):
      if len(info.axes) >= 2:
        in_name, out_name = info.axes[-2:]
        if FIXED in (in_name, out_name):
          raise SpecError(
              f"NFNLinear: tensor '{info.path}' has a fixed neuron axis {info.axes!r}; the NP "
              "layer permutes every neuron axis (use UNFLinear for fixed neurons)")
        if in_name == out_name:
          raise SpecError(
              f"NFNLinear supports MLP and CNN weight spaces only: tensor '{info.path}' "
              f"uses name {in_name!r} on both neuron axes (a recurrent matrix); use UNFLinear")
        if out_name in weights:
          raise SpecError(
              f"NFNLinear supports MLP and CNN weight spaces only: neuron name {out_name!r} "
              f"is the output of both '{infos[weights[out_name]].path}' and '{info.path}'; use UNFLinear")
        weights[out_name] = index
      elif len(info.axes) == 1 and info.axes[0] is not FIXED:
        if info.axes[0] in biases:
          raise SpecError(
              f"NFNLinear: '{info.path}' and '{infos[biases[info.axes[0]]].path}' are both "
              f"biases of neuron name {info.axes[0]!r}; use UNFLinear")
        biases[info.axes[0]] = index
      else:
        raise SpecError(
            f"NFNLinear supports MLP and CNN weight spaces only: tensor '{info.path}' with "
            f"axes {info.axes!r} is neither a kernel (..., in, out) nor a bias (out,); use UNFLinear")
    in_names = {infos[i].axes[-2]: out for out, i in weights.items()}
    starts = [out for out, i in weights.items() if infos[i].axes[-2] not in weights]
    if len(starts) != 1:
      raise SpecError(
          "NFNLinear supports a single chain of layers (MLP/CNN); the kernels "
          f"{[infos[i].path for i in weights.values()]} do not form one chain; use UNFLinear")
    order = [starts[0]]
    while order[-1] in in_names:
      order.append(in_names[order[-1]])
    if len(order) != len(weights):
      raise SpecError("NFNLinear: the kernels do not form one chain (a branch or a cycle); use UNFLinear")
    for name, index in biases.items():
      if name not in weights:
        raise SpecError(f"NFNLinear: bias '{infos[index].path}' has name {name!r}, which is no kernel's output")
    self.kernels = [weights[name] for name in order]
    self.biases = [biases.get(name) for name in order]


class NFNLinear(nn.Module):
  """The NFN "NP" layer for MLP and CNN weight spaces (Zhou et al. 2023).

  Kernels are ``[*filter, in, out]`` (flax layout) and form one chain; filter
  axes are folded into channels. Every neuron axis, including the inputs and
  outputs of the network, is permuted. By default there is no bias, which
  reproduces the NFN parameter count of the UNF paper's CNN row (Table 3).
  On an MLP the NP layer spans the same maps as :class:`UNFLinear`.
  """

  out_channels: int
  use_bias: bool = False
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: PyTree, spec: PyTree) -> PyTree:
    leaves, infos, treedef, _ = _features_and_infos(features, spec)
    chain = _Chain(infos)
    # Kernel i as [n_{i-1}, n_i, F_i * C]; bias i as [n_i, C] or None.
    kernels = [jnp.moveaxis(leaves[k], (-3, -2), (0, 1)).reshape(*leaves[k].shape[-3:-1], -1)
               for k in chain.kernels]
    biases = [None if b is None else leaves[b] for b in chain.biases]
    global_pool = jnp.concatenate(
        [w.mean(axis=(0, 1)) for w in kernels] + [b.mean(axis=0) for b in biases if b is not None])

    def linear(name: str, x: jax.Array, width: int) -> jax.Array:
      kernel = self.param(name, nn.initializers.lecun_normal(), (x.shape[-1], width),
                          self.param_dtype)
      return x @ kernel.astype(x.dtype)

    def concat(parts):
      return jnp.concatenate([p for p in parts if p is not None], axis=-1)

    outputs: list[jax.Array | None] = [None] * len(leaves)
    depth = len(kernels)
    for i, w in enumerate(kernels):
      info = infos[chain.kernels[i]]
      filter_shape = info.shape[:-2]
      width = math.prod(filter_shape) * self.out_channels
      # Vectors indexed by this layer's outputs n_i and by its inputs n_{i-1}.
      along_out = concat([w.mean(axis=0), kernels[i + 1].mean(axis=1) if i + 1 < depth else None,
                          biases[i]])
      along_in = concat([w.mean(axis=1), kernels[i - 1].mean(axis=0) if i > 0 else None,
                         biases[i - 1] if i > 0 else None])
      y = (linear(f"self[{info.path}]", w, width)
           + linear(f"along_out[{info.path}]", along_out, width)[None]
           + linear(f"along_in[{info.path}]", along_in, width)[:, None]
           + linear(f"pool[{info.path}]", global_pool, width))
      if self.use_bias:
        y = y + self.param(f"bias[{info.path}]", nn.initializers.zeros, (width,), self.param_dtype)
      y = y.reshape(*y.shape[:2], *filter_shape, self.out_channels)
      outputs[chain.kernels[i]] = jnp.moveaxis(y, (0, 1), (-3, -2))
      if biases[i] is not None:
        bias_info = infos[chain.biases[i]]
        along = concat([biases[i], w.mean(axis=0),
                        kernels[i + 1].mean(axis=1) if i + 1 < depth else None])
        b = (linear(f"along_out[{bias_info.path}]", along, self.out_channels)
             + linear(f"pool[{bias_info.path}]", global_pool, self.out_channels))
        if self.use_bias:
          b = b + self.param(f"bias[{bias_info.path}]", nn.initializers.zeros,
                             (self.out_channels,), self.param_dtype)
        outputs[chain.biases[i]] = b
    return treedef.unflatten(outputs)
