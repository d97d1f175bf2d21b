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

Modules: :mod:`~unf_lopt.layers.unf` (:class:`UNFLinear`),
:mod:`~unf_lopt.layers.deepset` (:class:`DeepSetLinear`, pooling, pointwise
maps), :mod:`~unf_lopt.layers.nfn` (:class:`NFNLinear`), the fold engine
they share, :mod:`~unf_lopt.layers.engine`, and
:mod:`~unf_lopt.layers.pointwise_mlp` (a DeepSet trunk run in blocks).
"""

from unf_lopt.layers.deepset import DeepSetLinear as DeepSetLinear
from unf_lopt.layers.deepset import DeepSetWeights as DeepSetWeights
from unf_lopt.layers.deepset import InvariantPool as InvariantPool
from unf_lopt.layers.deepset import invariant_pool as invariant_pool
from unf_lopt.layers.deepset import pointwise as pointwise
from unf_lopt.layers.nfn import NFNLinear as NFNLinear
from unf_lopt.layers.pointwise_mlp import pointwise_mlp as pointwise_mlp
from unf_lopt.layers.unf import UNFLinear as UNFLinear

__all__ = (
    "DeepSetLinear",
    "DeepSetWeights",
    "InvariantPool",
    "NFNLinear",
    "UNFLinear",
    "invariant_pool",
    "pointwise",
    "pointwise_mlp",
)
