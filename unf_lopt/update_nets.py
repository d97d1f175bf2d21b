"""The update networks ``f`` of the learned optimizers (UNF paper, Section 4.2).

``DS[32] -> ReLU -> DS[32] -> ReLU -> DS[32] -> ReLU -> head[1]`` where the
head is ``DS[1]`` (``deepset``), ``UNF[1]`` (``unf``) or ``NFN[1]`` (``nfn``).
The output is one number per parameter entry, a pytree shaped like the params.

The NFN head carries a bias so that the MLP count of Table 3 (3,783) holds;
Table 3's CNN NFN count (41,603) is the bias-free layer (22 fewer).
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
  """

  head: str = "unf"
  hidden: int = 32
  depth: int = 3

  @nn.compact
  def __call__(self, features: PyTree, spec: PyTree) -> PyTree:
    if self.head not in UPDATE_NETS:
      raise ValueError(f"unknown update network head {self.head!r}; expected one of {UPDATE_NETS}")
    relu = pointwise(jax.nn.relu)
    x = features
    for _ in range(self.depth):
      x = relu(DeepSetLinear(self.hidden)(x, spec))
    head = {"deepset": lambda: DeepSetLinear(1), "unf": lambda: UNFLinear(1),
            "nfn": lambda: NFNLinear(1, use_bias=True)}[self.head]()
    return jax.tree.map(lambda y: y[..., 0], head(x, spec))
