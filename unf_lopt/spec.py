"""Weight-space specifications.

A *specification* mirrors a parameter pytree. Each leaf is a tuple with one
entry per tensor axis: the name of the permutation acting on that axis. Axes
that share a name are permuted together; ``FIXED`` (``None``) marks an axis that
is never permuted (a positional axis, a conv filter tap, a known input feature).

Example:
  >>> import numpy as np
  >>> params = {"Dense_0": {"kernel": np.zeros((64, 32)), "bias": np.zeros(32)},
  ...           "Dense_1": {"kernel": np.zeros((32, 10)), "bias": np.zeros(10)}}
  >>> spec = mlp_spec(params)
  >>> spec["Dense_1"]["kernel"]
  ('n1', 'n2')
  >>> sorted(validate_spec(spec, params).items())
  [('n0', 64), ('n1', 32), ('n2', 10)]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

FIXED = None
"""Axis name of an axis that is not permuted; every layer treats it as channels."""

AxisName = Hashable
Axes = tuple  # tuple[AxisName | None, ...]
PyTree = Any


class SpecError(ValueError):
  """A specification does not match the parameters it describes."""


def is_axes(node: Any) -> bool:
  """True for a spec leaf: a tuple of hashable, non-container axis names."""
  if not isinstance(node, tuple):
    return False
  for name in node:
    if isinstance(name, (tuple, list, dict)):
      return False
    try:
      hash(name)
    except TypeError:
      return False
  return True


@dataclasses.dataclass(frozen=True)
class TensorInfo:
  """One tensor of a weight space: where it lives, its axis names, its shape."""

  path: str
  axes: Axes
  shape: tuple[int, ...]

  @property
  def permuted_positions(self) -> tuple[int, ...]:
    return tuple(i for i, n in enumerate(self.axes) if n is not FIXED)

  @property
  def fixed_positions(self) -> tuple[int, ...]:
    return tuple(i for i, n in enumerate(self.axes) if n is FIXED)


def path_to_str(path: Sequence[Any]) -> str:
  """'Dense_0/kernel' for a jax key path (dict keys, sequence indices, attrs)."""
  parts = []
  for key in path:
    for attr in ("key", "idx", "name"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts) if parts else "<root>"


def _leaves_by_path(tree: PyTree, is_leaf=None) -> tuple[dict[str, Any], Any]:
  with_path, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
  return {path_to_str(p): leaf for p, leaf in with_path}, treedef


def tensor_infos(spec: PyTree, tree: PyTree, *, trailing_dims: int = 0
                 ) -> tuple[list[TensorInfo], Any]:
  """Pairs every spec leaf with its tensor and checks that they agree.

  Args:
    spec: the specification (a pytree of axis-name tuples).
    tree: parameters, or features mirroring them.
    trailing_dims: number of extra trailing axes every tensor of ``tree``
      carries beyond the spec's axes (1 for a channel axis).

  Returns:
    The tensors in the flattening order of ``tree``, and ``tree``'s treedef.

  Raises:
    SpecError: naming the tensor path, the axis and the sizes that disagree.
  """
  spec_leaves, _ = _leaves_by_path(spec, is_leaf=is_axes)
  tree_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
  tree_paths = [path_to_str(p) for p, _ in tree_with_path]
  for path, axes in spec_leaves.items():
    if not is_axes(axes):
      raise SpecError(
          f"spec leaf at '{path}' is {axes!r}; a spec leaf must be a tuple of "
          "hashable axis names (use None for a fixed axis)")
  missing = [p for p in tree_paths if p not in spec_leaves]
  extra = [p for p in spec_leaves if p not in set(tree_paths)]
  if missing or extra:
    msg = ["spec structure does not match the parameters:"]
    if missing:
      msg.append(f"  tensors without a spec entry: {missing}")
    if extra:
      msg.append(f"  spec entries without a tensor: {extra}")
    raise SpecError("\n".join(msg))

  infos = []
  first_seen: dict[AxisName, tuple[str, int, int]] = {}
  for path, (_, leaf) in zip(tree_paths, tree_with_path):
    axes = spec_leaves[path]
    shape = tuple(int(d) for d in np.shape(leaf))
    if len(shape) != len(axes) + trailing_dims:
      extra_note = f" plus {trailing_dims} trailing axis" if trailing_dims else ""
      raise SpecError(
          f"tensor '{path}' has shape {shape} (rank {len(shape)}) but its spec "
          f"{axes!r} names {len(axes)} axes{extra_note}")
    core_shape = shape[:len(axes)]
    for position, (name, size) in enumerate(zip(axes, core_shape)):
      if name is FIXED:
        continue
      if name in first_seen:
        other_path, other_pos, other_size = first_seen[name]
        if other_size != size:
          raise SpecError(
              f"axis name {name!r} has inconsistent sizes: '{path}' axis "
              f"{position} has size {size} but '{other_path}' axis {other_pos} "
              f"has size {other_size}")
      else:
        first_seen[name] = (path, position, size)
    infos.append(TensorInfo(path, tuple(axes), core_shape))
  return infos, treedef


def validate_spec(spec: PyTree, params: PyTree, *, trailing_dims: int = 0
                  ) -> dict[AxisName, int]:
  """Checks ``spec`` against ``params``; returns the size of every axis name.

  Structure and ranks must match and every axis with one name must have one
  size. Nothing is broadcast: a mismatch raises :class:`SpecError` that names
  the tensor path, the axis position and the sizes.

  Example:
    >>> import numpy as np
    >>> validate_spec({"w": ("a", "b")}, {"w": np.zeros((2, 3))})
    {'a': 2, 'b': 3}
    >>> validate_spec({"w": ("a", "a")}, {"w": np.zeros((2, 3))})
    Traceback (most recent call last):
    ...
    unf_lopt.spec.SpecError: axis name 'a' has inconsistent sizes: 'w' axis 1 has size 3 but ...
  """
  infos, _ = tensor_infos(spec, params, trailing_dims=trailing_dims)
  sizes: dict[AxisName, int] = {}
  for info in infos:
    for name, size in zip(info.axes, info.shape):
      if name is not FIXED:
        sizes.setdefault(name, size)
  return sizes


# ---------------------------------------------------------------------------
# Per-layer spec builders (flax.linen parameter layouts).


def dense_spec(in_name: AxisName, out_name: AxisName, *, use_bias: bool = True
               ) -> dict[str, Axes]:
  """Spec of a flax ``Dense``: kernel ``(in, out)``, bias ``(out,)``."""
  spec = {"kernel": (in_name, out_name)}
  if use_bias:
    spec["bias"] = (out_name,)
  return spec


def conv_spec(in_name: AxisName, out_name: AxisName, *,
              spatial: Sequence[AxisName | None] = (FIXED, FIXED),
              use_bias: bool = True) -> dict[str, Axes]:
  """Spec of a flax ``Conv``: kernel ``(*spatial, in, out)``, bias ``(out,)``.

  Filter taps are ``FIXED`` by default (a true symmetry). The UNF paper instead
  names them (e.g. ``spatial=("h", "w")``), which is not a symmetry of the
  network but gives a smaller update network.
  """
  spec = {"kernel": (*spatial, in_name, out_name)}
  if use_bias:
    spec["bias"] = (out_name,)
  return spec


def embed_spec(vocab_name: AxisName, feature_name: AxisName) -> dict[str, Axes]:
  """Spec of a flax ``Embed``: embedding ``(vocab, features)``."""
  return {"embedding": (vocab_name, feature_name)}


def layer_norm_spec(name: AxisName, *, use_scale: bool = True,
                    use_bias: bool = True) -> dict[str, Axes]:
  """Spec of a flax ``LayerNorm`` over features named ``name``."""
  spec = {}
  if use_scale:
    spec["scale"] = (name,)
  if use_bias:
    spec["bias"] = (name,)
  return spec


def recurrent_cell_spec(in_name: AxisName, hidden_name: AxisName, *,
                        cell: str = "simple") -> dict[str, dict[str, Axes]]:
  """Spec of a flax ``SimpleCell`` or ``GRUCell``.

  The recurrent kernels are ``(hidden, hidden)`` with both axes on one name:
  the same permutation acts on rows and columns.
  """
  if cell == "simple":
    return {"i": dense_spec(in_name, hidden_name),
            "h": dense_spec(hidden_name, hidden_name, use_bias=False)}
  if cell == "gru":
    spec = {gate: dense_spec(in_name, hidden_name) for gate in ("ir", "iz", "in")}
    spec.update({gate: dense_spec(hidden_name, hidden_name, use_bias=False)
                 for gate in ("hr", "hz")})
    spec["hn"] = dense_spec(hidden_name, hidden_name)
    return spec
  raise ValueError(f"unknown recurrent cell {cell!r}; expected 'simple' or 'gru'")


def attention_spec(model_name: AxisName, *, prefix: str = "attn",
                   use_bias: bool = True) -> dict[str, dict[str, Axes]]:
  """Spec of a flax ``MultiHeadDotProductAttention`` on a stream ``model_name``.

  Heads are permuted together across query/key/value/out; the query and key
  head dimensions share one permutation (their inner product is invariant),
  the value and output head dimensions another.
  """
  heads, qk, v = f"{prefix}.heads", f"{prefix}.qk", f"{prefix}.v"

  def proj(head_dim):
    spec = {"kernel": (model_name, heads, head_dim)}
    if use_bias:
      spec["bias"] = (heads, head_dim)
    return spec

  out = {"kernel": (heads, v, model_name)}
  if use_bias:
    out["bias"] = (model_name,)
  return {"query": proj(qk), "key": proj(qk), "value": proj(v), "out": out}


def _dense_like(node: Any) -> bool:
  return (isinstance(node, Mapping) and set(node) <= {"kernel", "bias", "w", "b"}
          and ("kernel" in node or "w" in node))


def mlp_spec(params: Mapping[str, Any], *, fixed_input: bool = False,
             fixed_output: bool = False) -> dict[str, dict[str, Axes]]:
  """Spec of a chain of dense layers ``{layer: {"kernel": (in, out), "bias": (out,)}}``.

  Layers are taken in the mapping's order (flax keeps call order). Neuron
  layers are named ``n0, n1, ...``. Following the UNF paper every axis is
  permutable; ``fixed_input``/``fixed_output`` make the input features or the
  outputs ``FIXED`` instead.
  """
  spec = {}
  names = list(params)
  if not names:
    raise SpecError("mlp_spec: empty parameter tree")
  previous_out = None
  for index, layer in enumerate(names):
    node = params[layer]
    if not _dense_like(node):
      raise SpecError(
          f"mlp_spec: '{layer}' is not a dense layer (expected keys kernel/bias "
          f"or w/b, got {sorted(node) if isinstance(node, Mapping) else type(node).__name__})")
    kernel_key = "kernel" if "kernel" in node else "w"
    shape = np.shape(node[kernel_key])
    if len(shape) != 2:
      raise SpecError(f"mlp_spec: '{layer}/{kernel_key}' has shape {shape}; expected (in, out)")
    if previous_out is not None and previous_out != shape[0]:
      raise SpecError(
          f"mlp_spec: '{layer}/{kernel_key}' takes {shape[0]} inputs but the "
          f"previous layer '{names[index - 1]}' has {previous_out} outputs")
    in_name = FIXED if (index == 0 and fixed_input) else f"n{index}"
    out_name = FIXED if (index == len(names) - 1 and fixed_output) else f"n{index + 1}"
    spec[layer] = {kernel_key: (in_name, out_name)}
    for bias_key in ("bias", "b"):
      if bias_key in node:
        spec[layer][bias_key] = (out_name,)
    previous_out = shape[1]
  return spec
