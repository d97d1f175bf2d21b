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

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from unf_lopt.layers import DeepSetLinear, NFNLinear, UNFLinear, engine, pointwise
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
  """

  head: str = "unf"
  hidden: int = 32
  depth: int = 3
  nfn_head_bias: bool = True
  max_folded_size: int | None = None
  tensor_pairs: str = "all"

  @nn.compact
  def __call__(self, features: PyTree, spec: PyTree) -> PyTree:
    if self.head not in UPDATE_NETS:
      raise ValueError(f"unknown update network head {self.head!r}; expected one of {UPDATE_NETS}")
    relu = pointwise(jax.nn.relu)
    x = features
    if self.head == "unf":
      x = with_positional_channels(x, spec, self.max_folded_size)
    for _ in range(self.depth):
      x = relu(DeepSetLinear(self.hidden)(x, spec))
    head = {"deepset": lambda: DeepSetLinear(1),
            "unf": lambda: UNFLinear(1, max_folded_size=self.max_folded_size,
                                     tensor_pairs=self.tensor_pairs),
            "nfn": lambda: NFNLinear(1, use_bias=self.nfn_head_bias)}[self.head]()
    return jax.tree.map(lambda y: y[..., 0], head(x, spec))


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
