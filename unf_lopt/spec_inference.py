"""Inferring the weight-space specification of a flax.linen parameter tree.

:func:`infer_spec` recognises standard flax.linen modules by their parameter
names and shapes (``Dense``, ``Conv``, ``Embed``, ``LayerNorm``/``BatchNorm``,
``SimpleCell``/``GRUCell``/``LSTMCell``/``OptimizedLSTMCell``,
``MultiHeadDotProductAttention``) and links them into one weight space:

* modules are read in the order of the parameter dict, which is the order
  flax calls them in ``init``; the input axis of a module is the output axis of
  the module before it, and a size mismatch is an error, never a guess;
* if the tree holds a ``LayerNorm`` or an attention module, the model is taken
  to have a residual stream, and every module port with the stream's width is
  put on the stream's name (so residual Transformer blocks, whose blocks read
  and write one stream, get one permutation for it).

Tying two axes that could be permuted independently gives a smaller symmetry
group that is still a true symmetry; failing to tie axes that must move
together would not be. Where the rules above cannot decide, the error names
the tensor and suggests ``overrides``.

Example:
  >>> import jax, jax.numpy as jnp, flax.linen as nn
  >>> model = nn.Sequential([nn.Dense(32), nn.relu, nn.Dense(10)])
  >>> params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64)))["params"]
  >>> infer_spec(params)["layers_2"]
  {'kernel': ('layers_0.out', 'layers_2.out'), 'bias': ('layers_2.out',)}
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np

from unf_lopt.spec import FIXED, SpecError, validate_spec

PyTree = Any

_GRU_GATES = {"ir", "iz", "in", "hr", "hz", "hn"}
_LSTM_GATES = {"ii", "if", "ig", "io", "hi", "hf", "hg", "ho"}
_ATTENTION_KEYS = {"query", "key", "value", "out"}


def _shape(array) -> tuple[int, ...]:
  return tuple(int(d) for d in np.shape(array))


def _is_dense(node) -> bool:
  return (isinstance(node, Mapping) and "kernel" in node and set(node) <= {"kernel", "bias"}
          and not isinstance(node["kernel"], Mapping))


def _is_norm(node) -> bool:
  return (isinstance(node, Mapping) and node and set(node) <= {"scale", "bias"}
          and all(not isinstance(v, Mapping) and len(_shape(v)) == 1 for v in node.values()))


def _module_kind(node) -> str | None:
  if not isinstance(node, Mapping):
    return None
  keys = set(node)
  if _is_dense(node):
    return "dense" if len(_shape(node["kernel"])) == 2 else "conv"
  if keys == {"embedding"} and len(_shape(node["embedding"])) == 2:
    return "embed"
  if _is_norm(node):
    return "norm"
  if keys == {"i", "h"} and all(_is_dense(node[k]) for k in keys):
    return "simple_cell"
  if keys in (_GRU_GATES, _LSTM_GATES) and all(_is_dense(node[k]) for k in keys):
    return "gated_cell"
  if keys == _ATTENTION_KEYS:
    return "attention"
  return None


class _Linker:
  """Walks the modules and hands out axis names."""

  def __init__(self, params: Mapping, conv_spatial: str, overrides: Mapping[str, tuple]):
    self.sizes: dict[Hashable, int] = {}
    self.current: Hashable | None = None
    self.stream: Hashable | None = None
    self.conv_spatial = conv_spatial
    self.overrides = dict(overrides)
    self.stream_width = self._find_stream_width(params)
    self.produced: list[tuple[Hashable, str]] = []
    self.consumed: set[Hashable] = set()
    self.dangling_inputs: list[tuple[Hashable, str]] = []
    self.vocab_inputs: list[Hashable] = []

  def _find_stream_width(self, node) -> int | None:
    kind = _module_kind(node)
    if kind == "norm":
      return _shape(next(iter(node.values())))[0]
    if kind == "attention":
      return _shape(node["query"]["kernel"])[0]
    if isinstance(node, Mapping) and kind is None:
      for child in node.values():
        width = self._find_stream_width(child)
        if width is not None:
          return width
    return None

  def _fresh(self, name: str, size: int) -> str:
    self.sizes[name] = size
    return name

  def link_input(self, size: int, path: str) -> Hashable:
    if self.stream_width is not None and size == self.stream_width:
      if self.stream is None:
        self.stream = self.current if self.current is not None else self._fresh(f"{path}.in", size)
      name = self.stream
    elif self.current is not None and self.sizes[self.current] == size:
      name = self.current
    else:
      # Not (yet) linkable: the network input, or dict order differs from call order.
      name = self._fresh(f"{path}.in", size)
      self.dangling_inputs.append((name, path))
    self.consumed.add(name)
    return name

  def output_name(self, size: int, path: str) -> Hashable:
    if self.stream_width is not None and size == self.stream_width:
      if self.stream is None:
        self.stream = self._fresh(f"{path}.out", size)
      return self.stream
    name = self._fresh(f"{path}.out", size)
    self.produced.append((name, path))
    return name

  def link_dangling_ends(self) -> tuple[dict[Hashable, Hashable], list[Hashable], list[Hashable]]:
    """Joins inputs that found no producer to unconsumed outputs of the same size.

    A chain has one network input (or an embedding) and one network output;
    every extra loose input must be fed by exactly one loose output of its size,
    else the structure is ambiguous and an error says which tensors to specify.

    Returns:
      the renames, the network inputs and the network outputs.
    """
    inputs = list(self.dangling_inputs)
    outputs = [(n, p) for n, p in self.produced if n not in self.consumed]
    renames: dict[Hashable, Hashable] = {}
    while len(inputs) + len(self.vocab_inputs) > 1:
      pairs = [(i, o) for i in inputs for o in outputs
               if self.sizes[i[0]] == self.sizes[o[0]] and i[1] != o[1]]
      if len(pairs) != 1:
        loose = ", ".join(f"'{p}' (size {self.sizes[n]})" for n, p in inputs)
        raise SpecError(
            f"infer_spec: cannot decide what feeds the inputs of {loose}: "
            f"{'no' if not pairs else 'several'} unconsumed outputs of matching size "
            f"({', '.join(repr(p) for _, p in outputs) or 'none'}). "
            "The modules do not form a chain "
            "(a reshape/flatten or a branch), or the dict is not in call order. Write the spec of "
            "these tensors by hand and pass it as overrides={path: axes}")
      (i, o), = pairs
      renames[i[0]] = o[0]
      inputs.remove(i)
      outputs.remove(o)
    network_inputs = [n for n, _ in inputs] + self.vocab_inputs
    network_outputs = [n for n, _ in outputs] or ([self.stream] if self.stream is not None else [])
    return renames, network_inputs, network_outputs

  def advance(self, name: Hashable) -> None:
    self.current = name

  # -- modules ---------------------------------------------------------------

  def dense(self, node, path):
    in_size, out_size = _shape(node["kernel"])
    in_name = self.link_input(in_size, path)
    out_name = self.output_name(out_size, path)
    self.advance(out_name)
    spec = {"kernel": (in_name, out_name)}
    if "bias" in node:
      spec["bias"] = (out_name,)
    return spec

  def conv(self, node, path):
    *spatial, in_size, out_size = _shape(node["kernel"])
    in_name = self.link_input(in_size, path)
    out_name = self.output_name(out_size, path)
    self.advance(out_name)
    if self.conv_spatial == "fixed":
      taps = (FIXED,) * len(spatial)
    else:
      taps = tuple(self._fresh(f"{path}.tap{i}", s) for i, s in enumerate(spatial))
    spec = {"kernel": (*taps, in_name, out_name)}
    if "bias" in node:
      spec["bias"] = (out_name,)
    return spec

  def embed(self, node, path):
    vocab, features = _shape(node["embedding"])
    vocab_name = self._fresh(f"{path}.vocab", vocab)
    self.vocab_inputs.append(vocab_name)
    out_name = self.output_name(features, path)
    self.advance(out_name)
    return {"embedding": (vocab_name, out_name)}

  def norm(self, node, path):
    size = _shape(next(iter(node.values())))[0]
    name = self.link_input(size, path)
    self.advance(name)
    return {key: (name,) for key in node}

  def cell(self, node, path):
    hidden_size = _shape(node["h" if "h" in node else "hn" if "hn" in node else "hi"]["kernel"])[1]
    input_gates = [k for k in node if k.startswith("i")]
    in_size = _shape(node[input_gates[0]]["kernel"])[0]
    in_name = self.link_input(in_size, path)
    hidden = self.output_name(hidden_size, path)
    spec = {}
    for gate, gate_node in node.items():
      rows = in_name if gate.startswith("i") else hidden
      spec[gate] = {"kernel": (rows, hidden)}
      if "bias" in gate_node:
        spec[gate]["bias"] = (hidden,)
    self.advance(hidden)
    return spec

  def attention(self, node, path):
    in_sizes = {_shape(node[k]["kernel"])[0] for k in ("query", "key", "value")}
    if len(in_sizes) != 1:
      raise SpecError(
          f"infer_spec: attention '{path}' reads inputs of sizes {sorted(in_sizes)} "
          "(cross-attention); pass its spec as overrides")
    in_name = self.link_input(in_sizes.pop(), path)
    _, heads, qk = _shape(node["query"]["kernel"])
    _, _, v = _shape(node["value"]["kernel"])
    heads_name = self._fresh(f"{path}.heads", heads)
    qk_name = self._fresh(f"{path}.qk", qk)
    v_name = self._fresh(f"{path}.v", v)
    out_name = self.output_name(_shape(node["out"]["kernel"])[-1], path)
    spec = {}
    for key, head_dim in (("query", qk_name), ("key", qk_name), ("value", v_name)):
      spec[key] = {"kernel": (in_name, heads_name, head_dim)}
      if "bias" in node[key]:
        spec[key]["bias"] = (heads_name, head_dim)
    spec["out"] = {"kernel": (heads_name, v_name, out_name)}
    if "bias" in node["out"]:
      spec["out"]["bias"] = (out_name,)
    self.advance(out_name)
    return spec

  def walk(self, node, path: str):
    if path in self.overrides:
      return self.overrides.pop(path)
    kind = _module_kind(node)
    if kind is not None:
      handler = {"dense": self.dense, "conv": self.conv, "embed": self.embed, "norm": self.norm,
                 "simple_cell": self.cell, "gated_cell": self.cell,
                 "attention": self.attention}[kind]
      return handler(node, path)
    if isinstance(node, Mapping):
      return {key: self.walk(child, f"{path}/{key}" if path else str(key))
              for key, child in node.items()}
    raise SpecError(
        f"infer_spec: cannot decide the axes of '{path}' (shape {_shape(node)}): it is not part "
        "of a recognised flax module (Dense, Conv, Embed, LayerNorm, SimpleCell, GRUCell, "
        "LSTMCell, MultiHeadDotProductAttention). Pass overrides={'" + path + "': (axis names)}")


def _rename(spec: PyTree, mapping: Mapping[Hashable, Hashable]) -> PyTree:
  if isinstance(spec, Mapping):
    return {k: _rename(v, mapping) for k, v in spec.items()}

  def resolve(name):
    while name is not FIXED and name in mapping:
      name = mapping[name]
    return name

  return tuple(resolve(name) for name in spec)


def infer_spec(params: Mapping[str, Any], *, fixed_io: bool = False, tie_vocab: bool = True,
               conv_spatial: str = "fixed",
               overrides: Mapping[str, tuple] | None = None) -> dict[str, Any]:
  """Infers the spec of a flax.linen parameter tree (see the module docstring).

  Args:
    params: the ``"params"`` collection of a flax.linen model, as ``init``
      returns it (dict order = call order).
    fixed_io: make the network's input features and outputs ``FIXED``
      (the true symmetry); by default they are permuted, as in the UNF paper.
    tie_vocab: when the model starts with an ``Embed`` and its last output
      has the vocabulary size, give both one name (the UNF paper's RNN spec).
    conv_spatial: ``"fixed"`` (default, a true symmetry) or ``"permute"``
      (a name per filter axis, as the UNF paper's CNN experiments do).
    overrides: ``{"path/to/tensor": axes}`` or ``{"path/to/module": spec}`` for
      parts the rules cannot decide; their names may be any other inferred
      name (e.g. ``"cell.out"``) to link them in.

  Returns:
    A spec that :func:`unf_lopt.spec.validate_spec` accepts for ``params``.

  Raises:
    SpecError: naming the tensor or module that could not be decided.
  """
  if conv_spatial not in ("fixed", "permute"):
    raise ValueError(f"conv_spatial must be 'fixed' or 'permute', got {conv_spatial!r}")
  if not isinstance(params, Mapping):
    raise SpecError(f"infer_spec expects a flax params dict, got {type(params).__name__}")
  if "params" in params and len(params) == 1:
    params = params["params"]
  linker = _Linker(params, conv_spatial, overrides or {})
  spec = linker.walk(params, "")
  if linker.overrides:
    raise SpecError("infer_spec: overrides name paths that are not in params: "
                    f"{sorted(linker.overrides)}")
  renames, network_inputs, network_outputs = linker.link_dangling_ends()
  if tie_vocab and len(linker.vocab_inputs) == 1 and len(network_outputs) == 1:
    vocab, (head,) = linker.vocab_inputs[0], network_outputs
    if linker.sizes[vocab] == linker.sizes[head]:
      renames[head] = vocab
  if fixed_io:
    renames.update({name: FIXED for name in (*network_inputs, *network_outputs)})
  spec = _rename(spec, renames)
  validate_spec(spec, params)
  return spec

