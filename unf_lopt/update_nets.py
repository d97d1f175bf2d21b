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

from unf_lopt.layers import DeepSetLinear, NFNLinear, UNFLinear, pointwise

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
  """

  head: str = "unf"
  hidden: int = 32
  depth: int = 3
  nfn_head_bias: bool = True

  @nn.compact
  def __call__(self, features: PyTree, spec: PyTree) -> PyTree:
    if self.head not in UPDATE_NETS:
      raise ValueError(f"unknown update network head {self.head!r}; expected one of {UPDATE_NETS}")
    relu = pointwise(jax.nn.relu)
    x = features
    for _ in range(self.depth):
      x = relu(DeepSetLinear(self.hidden)(x, spec))
    head = {"deepset": lambda: DeepSetLinear(1), "unf": lambda: UNFLinear(1),
            "nfn": lambda: NFNLinear(1, use_bias=self.nfn_head_bias)}[self.head]()
    return jax.tree.map(lambda y: y[..., 0], head(x, spec))
