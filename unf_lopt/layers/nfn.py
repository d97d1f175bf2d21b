"""The NFN "NP" layer (Zhou et al. 2023) for MLP and CNN weight spaces.

Written from the paper's equations. :class:`_Chain` parses a spec into one
chain of layers; :class:`NFNLinear` maps each kernel and bias from its own
entries, the pools along its neuron axes and the global pool.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from unf_lopt.layers import engine
from unf_lopt.spec import FIXED, SpecError, TensorInfo

PyTree = Any


class _Chain:
  """An MLP/CNN weight space as one chain of layers.

  Layer i has a kernel ``[*filter, n_{i-1}, n_i]`` and an optional bias
  ``[n_i]``; ``kernels`` and ``biases`` hold their leaf indices in chain order
  (``None`` for a layer without a bias).
  """

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
              f"is the output of both '{infos[weights[out_name]].path}' and '{info.path}'; "
              "use UNFLinear")
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
            f"axes {info.axes!r} is neither a kernel (..., in, out) nor a bias (out,); "
            "use UNFLinear")
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
      raise SpecError("NFNLinear: the kernels do not form one chain (a branch or a cycle); "
                      "use UNFLinear")
    for name, index in biases.items():
      if name not in weights:
        raise SpecError(f"NFNLinear: bias '{infos[index].path}' has name {name!r}, which is "
                        "no kernel's output")
    self.kernels = [weights[name] for name in order]
    self.biases = [biases.get(name) for name in order]


class NFNLinear(nn.Module):
  """The NFN "NP" layer for MLP and CNN weight spaces (Zhou et al. 2023).

  Kernels are ``[*filter, in, out]`` (flax layout) and form one chain; filter
  axes are folded into channels. Every neuron axis, including the inputs and
  outputs of the network, is permuted. By default there is no bias, which
  reproduces the NFN parameter count of the UNF paper's CNN row (Table 3:
  41,603); its MLP row (3,783) needs ``use_bias=True``, the default of
  `unf_lopt.UpdateNet`'s ``nfn`` head (``nfn_head_bias``). Filter-tap names of
  a spec are ignored: taps are channels here, never permuted.
  On an MLP the NP layer spans the same maps as :class:`UNFLinear`.
  """

  out_channels: int
  use_bias: bool = False
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: PyTree, spec: PyTree) -> PyTree:
    leaves, infos, treedef, _ = engine.features_and_infos(features, spec)
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
