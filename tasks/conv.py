"""Convolution as patch extraction plus one matmul: fast under ``jax.vmap`` on CPU.

PES meta-training and evaluation ``vmap`` inner training over per-run (and
per-particle) parameters. ``vmap`` of ``lax.conv_general_dilated`` over
per-example kernels becomes a *grouped* convolution, whose gradient XLA:CPU
computes slowly: for the CNN task's loss gradient vmapped over 32 parameter
sets on a 2-core CPU, 1.38 s with ``nn.Conv`` against 0.31 s here, and PES
meta-training on ``cnn_fmnist_standin`` runs about 20x faster (see
``bench_meta_train``). `PatchConv` computes the same
convolution as strided slices of the padded input, concatenated along the
channel axis, times the kernel reshaped to a matrix: under ``vmap`` that is a
batched matmul, and its gradient is a batched matmul plus slicing transposes.

`PatchConv` is a drop-in for ``flax.linen.Conv`` with the same parameter names,
shapes and initialisers, so parameters, specs and checkpoints are the same for
both. `models.CNN` picks the implementation with ``conv_impl`` (see
`resolve_conv_impl`): on GPU/TPU, convolutions are fast and ``nn.Conv`` stays.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# ``conv_impl`` values: "lax" is ``nn.Conv``, "patches" is `PatchConv`, "auto" picks by backend.
CONV_IMPLS = ("auto", "lax", "patches")
# How `PatchConv` extracts patches: strided slices of the padded input (fast under vmap on
# CPU) or ``lax.conv_general_dilated_patches`` (an identity-kernel conv, kept for comparison:
# its input gradient is a transposed conv; the CNN's gradient vmapped over 32 parameter sets
# took 3.4 s with it, 2.4x nn.Conv's time and 11x the slices').
PATCH_EXTRACTIONS = ("slices", "lax_patches")


def resolve_conv_impl(conv_impl: str) -> str:
  """``"lax"`` or ``"patches"`` for a ``conv_impl`` option; ``"auto"`` decides by backend.

  ``"auto"`` is ``"patches"`` when ``jax.default_backend()`` is ``"cpu"`` (where vmapped
  convolution gradients are slow) and ``"lax"`` elsewhere. Called at trace time.

  >>> resolve_conv_impl("lax")
  'lax'
  >>> resolve_conv_impl("auto") == ("patches" if jax.default_backend() == "cpu" else "lax")
  True

  Raises:
    ValueError: an unknown ``conv_impl``.
  """
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f"conv_impl must be one of {', '.join(CONV_IMPLS)}; got {conv_impl!r}")
  if conv_impl == "auto":
    return "patches" if jax.default_backend() == "cpu" else "lax"
  return conv_impl


def _tuple(value: int | Sequence[int], length: int) -> tuple[int, ...]:
  return (value,) * length if isinstance(value, int) else tuple(value)


def extract_patches(inputs: jax.Array, kernel_size: Sequence[int], strides: Sequence[int],
                    padding: str | Sequence[tuple[int, int]] = "SAME") -> jax.Array:
  """Patches ``[batch, *out_spatial, prod(kernel_size) * channels]`` of channels-last inputs.

  The last axis is offset-major, channel-minor: entry ``(offset, c)`` is at
  ``offset * channels + c``, with offsets in row-major order over ``kernel_size``.
  That is the order of a ``(*kernel_size, in, out)`` kernel reshaped to
  ``(prod(kernel_size) * in, out)``. (``lax.conv_general_dilated_patches`` orders
  the same entries channel-major.)

  Args:
    inputs: ``[batch, *spatial, channels]``.
    kernel_size: window size per spatial axis.
    strides: step per spatial axis.
    padding: ``"SAME"``, ``"VALID"`` or ``(low, high)`` pairs per spatial axis, as in
      ``lax.conv_general_dilated``.

  >>> images = jnp.arange(16.0).reshape(1, 4, 4, 1)
  >>> extract_patches(images, (2, 2), (2, 2), "VALID")[0, 0, 0]
  Array([0., 1., 4., 5.], dtype=float32)
  """
  spatial = inputs.shape[1:-1]
  pads = (lax.padtype_to_pads(spatial, kernel_size, strides, padding)
          if isinstance(padding, str) else [tuple(pad) for pad in padding])
  padded = jnp.pad(inputs, ((0, 0), *pads, (0, 0)))
  out_shape = [(size + low + high - window) // stride + 1 for size, (low, high), window, stride
               in zip(spatial, pads, kernel_size, strides)]
  columns = []
  for offsets in itertools.product(*(range(window) for window in kernel_size)):
    start = (0, *offsets, 0)
    limit = (padded.shape[0],
             *(offset + stride * (count - 1) + 1
               for offset, stride, count in zip(offsets, strides, out_shape)),
             padded.shape[-1])
    columns.append(lax.slice(padded, start, limit, (1, *strides, 1)))
  return jnp.concatenate(columns, axis=-1)


def patch_conv(inputs: jax.Array, kernel: jax.Array, strides: Sequence[int],
               padding: str | Sequence[tuple[int, int]] = "SAME",
               extraction: str = "slices") -> jax.Array:
  """``lax.conv_general_dilated`` of channels-last ``inputs`` and a ``(*window, in, out)`` kernel.

  Computed as patches times the kernel reshaped to a matrix (no bias).

  Args:
    inputs: ``[batch, *spatial, in]``.
    kernel: ``[*window, in, out]`` (flax's ``nn.Conv`` layout).
    strides: step per spatial axis.
    padding: as in `extract_patches`.
    extraction: ``"slices"`` (`extract_patches`) or ``"lax_patches"``
      (``lax.conv_general_dilated_patches``).

  >>> x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 5, 3))
  >>> k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 4))
  >>> reference = lax.conv_general_dilated(x, k, (2, 2), "SAME",
  ...                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  >>> bool(jnp.allclose(patch_conv(x, k, (2, 2)), reference, atol=1e-5))
  True
  """
  window, (in_features, out_features) = kernel.shape[:-2], kernel.shape[-2:]
  if extraction == "slices":
    patches = extract_patches(inputs, window, strides, padding)
    matrix = kernel.reshape(math.prod(window) * in_features, out_features)
  elif extraction == "lax_patches":
    num_spatial = len(window)
    # Channels-last inputs and outputs, as (batch axis, feature axis, spatial axes).
    lhs = (0, num_spatial + 1, *range(1, num_spatial + 1))
    dimension_numbers = lax.ConvDimensionNumbers(
        lhs_spec=lhs, rhs_spec=tuple(range(num_spatial + 2)), out_spec=lhs)
    patches = lax.conv_general_dilated_patches(inputs, window, strides, padding,
                                               dimension_numbers=dimension_numbers)
    # Channel-major features: (in, *window) order, so move `in` in front before flattening.
    matrix = jnp.moveaxis(kernel, -2, 0).reshape(in_features * math.prod(window), out_features)
  else:
    raise ValueError(f"extraction must be one of {', '.join(PATCH_EXTRACTIONS)}; "
                     f"got {extraction!r}")
  return jnp.einsum("...k,ko->...o", patches, matrix)


class PatchConv(nn.Module):
  """A drop-in for ``nn.Conv`` (channels-last, no dilation or groups), computed by `patch_conv`.

  Same parameters as ``nn.Conv``: ``kernel`` ``(*kernel_size, in, features)``
  (LeCun-normal) and ``bias`` ``(features,)`` (zeros), so the two hold
  interchangeable parameter trees; under the same module name they initialise
  to the same values.

  Attributes:
    features: output channels.
    kernel_size: window size per spatial axis.
    strides: an int or one step per spatial axis.
    padding: ``"SAME"``, ``"VALID"`` or ``(low, high)`` pairs per spatial axis.
    use_bias: add a learned bias.
    extraction: ``"slices"`` or ``"lax_patches"`` (see `patch_conv`).
    kernel_init, bias_init, param_dtype: as in ``nn.Conv``.

  >>> x = jnp.ones((2, 8, 8, 3))
  >>> params = PatchConv(4, (3, 3), strides=2).init(jax.random.PRNGKey(0), x)["params"]
  >>> jax.tree.map(jnp.shape, params)
  {'bias': (4,), 'kernel': (3, 3, 3, 4)}
  """

  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: int | Sequence[int] = 1
  padding: str | Sequence[tuple[int, int]] = "SAME"
  use_bias: bool = True
  extraction: str = "slices"
  param_dtype: jnp.dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    window = tuple(self.kernel_size)
    strides = _tuple(self.strides, len(window))
    # Leading axes beyond one batch axis are flattened, as nn.Conv does.
    batch_shape = inputs.shape[:-(len(window) + 1)]
    inputs = inputs.reshape(-1, *inputs.shape[len(batch_shape):])
    kernel = self.param("kernel", self.kernel_init, (*window, inputs.shape[-1], self.features),
                        self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    inputs, kernel, bias = nn.dtypes.promote_dtype(inputs, kernel, bias)
    outputs = patch_conv(inputs, kernel, strides, self.padding, self.extraction)
    if bias is not None:
      outputs = outputs + bias
    return outputs.reshape(*batch_shape, *outputs.shape[1:])
