"""The update networks ``f`` of the learned optimizers (UNF paper, Section 4.2).

``DS[32] -> ReLU -> DS[32] -> ReLU -> DS[32] -> ReLU -> head[1]`` where the
head is ``DS[1]`` (``deepset``), ``UNF[1]`` (``unf``) or ``NFN[1]`` (``nfn``).
The output is one number per parameter entry, a pytree shaped like the params.

The NFN head carries a bias by default (``nfn_head_bias=True``), so that the
MLP row of the UNF paper's Table 3 (3,783 with the 3 learned scalars) holds;
Table 3's CNN row (41,603) is the bias-free head, ``nfn_head_bias=False``
(41,625 with the bias, 22 more: 9 per 3x3 kernel, as filter taps are
channels of the NP layer, and 1 per dense kernel and per bias tensor). The
paper's rows are thus not consistent with one layer.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from unf_lopt.layers import (DeepSetLinear, DeepSetWeights, NFNLinear, UNFLinear, engine,
                             pointwise, pointwise_mlp)
from unf_lopt.layers.pointwise_mlp import BLOCK_ROWS, pointwise_mlp_columns
from unf_lopt.layers.unf import TENSOR_PAIRS  # noqa: F401  (re-exported)

PyTree = Any
# The one registry of update nets. UPDATE_NETS are the heads of UpdateNet, the
# learned parts of NominalLOpt("unf"/"nfn"/"deepset"). Meta-training also
# learns "sgdm", the nominal term alone (learned step size and momentum, no
# network); "adam" (unf_lopt.optimizer.KINDS) has nothing to learn.
UPDATE_NETS = ("unf", "nfn", "deepset")
META_TRAINABLE = (*UPDATE_NETS, "sgdm")


class UpdateNet(nn.Module):
  """Pointwise DeepSet trunk and an equivariant head.

  Attributes:
    head: ``"deepset"``, ``"unf"`` or ``"nfn"``.
    hidden: width of the DeepSet trunk.
    depth: number of hidden DeepSet layers.
    nfn_head_bias: whether the ``nfn`` head has a bias (Table 3's MLP row: yes,
      its CNN row: no); other heads always have one.
    max_folded_size: the ``unf`` head's
      :attr:`~unf_lopt.layers.UNFLinear.max_folded_size`: ``None`` (default,
      the legacy net) folds every fixed axis into channels; a number folds the
      fixed axes of a tensor only up to that many entries and shares the head
      over larger ones. When some tensor has such a large fixed axis, every
      entry also gets ``engine.POSITIONAL_CHANNELS`` more input channels
      (:func:`~unf_lopt.layers.engine.positional_channels`: where it sits along
      those axes, zero elsewhere) so that the trunk and head can tell the
      shared indices apart; weight spaces without one keep their exact
      meta-parameters. Other heads ignore it.
    tensor_pairs: the ``unf`` head's
      :attr:`~unf_lopt.layers.UNFLinear.tensor_pairs` (``"all"`` or
      ``"linked"``).
    identity_share: the ``unf`` head's
      :attr:`~unf_lopt.layers.UNFLinear.identity_share`: ``None`` (default)
      initialises every basis term alike; a number in (0, 1) gives the
      identity term (each entry's own channels, what the ``deepset`` head
      computes) that share of the initial output variance. Initial values
      only: the head spans the same maps.
    block_rows: rows per block of the fused trunk (see ``shared`` in
      ``__call__``); tensors of fewer than ``4 * block_rows`` entries run
      together as one matrix, ``None`` never blocks. Speed only.
  """

  head: str = "unf"
  hidden: int = 32
  depth: int = 3
  nfn_head_bias: bool = True
  max_folded_size: int | None = None
  tensor_pairs: str = "all"
  identity_share: float | None = None
  block_rows: int | None = BLOCK_ROWS

  @nn.compact
  def __call__(self, features: PyTree, spec: PyTree, shared: jax.Array | None = None
               ) -> PyTree:
    """The update ``f``: a pytree shaped like the params (one number per entry).

    Args:
      features: ``[*shape, C]`` per tensor: all 19 channels
        (`unf_lopt.features.build_features`), or, with ``shared``, only the
        channels that differ between entries (`unf_lopt.features.entry_features`).
      spec: the weight space's spec.
      shared: channels every entry has in common (the time embedding), which
        ``build_features`` would append to every entry. Given this way the
        trunk folds them into its first bias and runs as one blocked chain
        over all entries (`unf_lopt.layers.pointwise_mlp`), never building the
        19-channel tensor; the result equals the plain call up to float
        rounding.
    """
    if self.head not in UPDATE_NETS:
      raise ValueError(f"unknown update network head {self.head!r}; expected one of {UPDATE_NETS}")
    if shared is not None and self.depth > 0:
      return self._fused(features, spec, shared)
    if shared is not None:  # no trunk to fold the shared channels into
      features = jax.tree.map(lambda x: jnp.concatenate(
          [x, jnp.broadcast_to(shared, (*x.shape[:-1], shared.shape[-1]))], -1), features)
    relu = pointwise(jax.nn.relu)
    x = features
    if self.head == "unf":
      x = with_positional_channels(x, spec, self.max_folded_size)
    for _ in range(self.depth):
      x = relu(DeepSetLinear(self.hidden)(x, spec))
    return self._head(x, spec)

  def _head(self, x: PyTree, spec: PyTree) -> PyTree:
    head = {"deepset": lambda: DeepSetLinear(1),
            "unf": lambda: UNFLinear(1, max_folded_size=self.max_folded_size,
                                     tensor_pairs=self.tensor_pairs,
                                     identity_share=self.identity_share),
            "nfn": lambda: NFNLinear(1, use_bias=self.nfn_head_bias)}[self.head]()
    return jax.tree.map(lambda y: y[..., 0], head(x, spec))

  def _fused(self, features: PyTree, spec: PyTree, shared: jax.Array) -> PyTree:
    """The trunk over all entries at once; the names match the plain path's parameters."""
    leaves, infos, treedef, entry_width = engine.features_and_infos(features, spec)
    if self.head == "unf":  # the plain path appends them after the shared channels
      extra = with_positional_channels(
          treedef.unflatten([x[..., :0] for x in leaves]), spec, self.max_folded_size)
      leaves = [jnp.concatenate([x, p], -1) for x, p in zip(leaves, treedef.flatten_up_to(extra))]
    extra_width = leaves[0].shape[-1] - entry_width
    kernel, bias = DeepSetWeights(self.hidden, name="DeepSetLinear_0")(
        entry_width + shared.shape[-1] + extra_width)
    layers = [(jnp.concatenate([kernel[:entry_width], kernel[entry_width + shared.shape[-1]:]]),
               bias + shared.astype(kernel.dtype) @ kernel[entry_width:][:shared.shape[-1]])]
    for index in range(1, self.depth):
      layers.append(DeepSetWeights(self.hidden, name=f"DeepSetLinear_{index}")(self.hidden))
    pointwise_head = self.head == "deepset"
    if pointwise_head:
      layers.append(DeepSetWeights(1, name=f"DeepSetLinear_{self.depth}")(self.hidden))

    def run(rows):
      return pointwise_mlp(rows, layers, jax.nn.relu, activate_output=not pointwise_head,
                           block_rows=self.block_rows)

    # Large tensors run alone (in blocks, in place); the small ones together as
    # one matrix, which saves the per-call overhead of many tiny chains.
    sizes = [math.prod(info.shape) for info in infos]
    threshold = math.inf if self.block_rows is None else 4 * self.block_rows
    small = [i for i, size in enumerate(sizes) if size < threshold]
    outputs = [None] * len(leaves)
    if small:
      if pointwise_head:  # one output channel: the column layout's [1, n] is [n, 1] as is
        out = pointwise_mlp_columns(
            jnp.concatenate([leaves[i].reshape(sizes[i], -1).T for i in small], axis=1),
            layers, jax.nn.relu).T
      else:
        out = run(jnp.concatenate([leaves[i].reshape(sizes[i], -1) for i in small]))
      pieces = jnp.split(out, np.cumsum([sizes[i] for i in small])[:-1].tolist())
      for i, piece in zip(small, pieces):
        outputs[i] = piece
    for i, size in enumerate(sizes):
      if outputs[i] is None:
        outputs[i] = run(leaves[i].reshape(size, -1))
    trunk = treedef.unflatten([out.reshape(*info.shape, -1) for out, info in zip(outputs, infos)])
    if pointwise_head:
      return jax.tree.map(lambda y: y[..., 0], trunk)
    return self._head(trunk, spec)


def with_positional_channels(features: PyTree, spec: PyTree, max_folded_size: int | None
                             ) -> PyTree:
  """``features`` with `engine.positional_channels` appended, if some tensor needs them.

  Unchanged when no tensor has a fixed axis beyond ``max_folded_size`` (and
  always for ``None``), so such weight spaces keep their input width.
  """
  leaves, infos, treedef, _ = engine.features_and_infos(features, spec)
  if not any(engine.large_fixed_positions(info, max_folded_size) for info in infos):
    return features
  return treedef.unflatten([
      jnp.concatenate([x, engine.positional_channels(info, max_folded_size, x.dtype)], -1)
      for x, info in zip(leaves, infos)])
