"""PatchConv and the CNN's conv_impl: the same convolution as lax/nn.Conv, values and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from unf_lopt.tasks import conv, get_task, models

TOLERANCE = {"rtol": 2e-5, "atol": 2e-5}


def _lax_conv(inputs, kernel, bias, strides, padding="SAME"):
  dimension_numbers = lax.conv_dimension_numbers(inputs.shape, kernel.shape,
                                                 ("NHWC", "HWIO", "NHWC"))
  return lax.conv_general_dilated(inputs, kernel, strides, padding,
                                  dimension_numbers=dimension_numbers) + bias


def _random(shape, seed):
  return jax.random.normal(jax.random.PRNGKey(seed), shape)


def test_patches_match_a_numpy_loop():
  # Independent of lax: each output is the dot product of the kernel with its zero-padded window.
  inputs, kernel = np.asarray(_random((1, 5, 4, 2), 0)), np.asarray(_random((3, 3, 2, 3), 1))
  # SAME, stride 2: 3 x 2 outputs; padding totals (3-1)*2+3-5 = 2 rows and (2-1)*2+3-4 = 1
  # column, the odd one at the end.
  padded = np.pad(inputs, ((0, 0), (1, 1), (0, 1), (0, 0)))
  expected = np.zeros((1, 3, 2, 3), np.float32)
  for row in range(3):
    for column in range(2):
      window = padded[0, 2 * row:2 * row + 3, 2 * column:2 * column + 3]
      expected[0, row, column] = np.einsum("hwc,hwco->o", window, kernel)
  for extraction in conv.PATCH_EXTRACTIONS:
    np.testing.assert_allclose(conv.patch_conv(inputs, kernel, (2, 2), "SAME", extraction),
                               expected, **TOLERANCE)


def test_extract_patches_order_is_offset_major():
  images = jnp.arange(2 * 3 * 3 * 2.0).reshape(2, 3, 3, 2)
  patches = conv.extract_patches(images, (2, 2), (1, 1), "VALID")
  assert patches.shape == (2, 2, 2, 8)
  # Output (0, 1, 1) of example 1: offsets (0,0), (0,1), (1,0), (1,1), two channels each.
  expected = np.concatenate([images[1, 1 + i, 1 + j] for i in range(2) for j in range(2)])
  np.testing.assert_array_equal(patches[1, 1, 1], expected)


@pytest.mark.parametrize("extraction", conv.PATCH_EXTRACTIONS)
@pytest.mark.parametrize("stride, size, channels", [
    (1, (7, 7), (3, 4)), (2, (7, 7), (5, 2)), (1, (8, 6), (5, 2)), (2, (8, 6), (3, 4))])
def test_vmapped_values_and_gradients_match_lax(extraction, stride, size, channels):
  particles, (in_features, out_features) = 3, channels
  inputs = _random((particles, 2, *size, in_features), 0)  # per-particle inputs, as in layer 2
  kernels = 0.3 * _random((particles, 3, 3, in_features, out_features), 1)
  biases = _random((particles, out_features), 2)
  cotangent = _random((particles, 2, -(-size[0] // stride), -(-size[1] // stride), out_features),
                      3)

  def value_and_grads(conv_fn):
    def weighted(kernel, bias, x, weights):  # a loss whose gradient is the cotangent
      return jnp.sum(conv_fn(x, kernel, bias) * weights)

    @jax.jit  # one compilation instead of many op-by-op dispatches
    def compute(inputs, kernels, biases, cotangent):
      outputs = jax.vmap(conv_fn)(inputs, kernels, biases)
      return outputs, jax.vmap(jax.grad(weighted, argnums=(0, 1, 2)))(kernels, biases, inputs,
                                                                       cotangent)
    return compute(inputs, kernels, biases, cotangent)

  expected = value_and_grads(lambda x, k, b: _lax_conv(x, k, b, (stride, stride)))
  actual = value_and_grads(
      lambda x, k, b: conv.patch_conv(x, k, (stride, stride), "SAME", extraction) + b)
  for got, want in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, **TOLERANCE)


def test_shared_inputs_and_other_paddings():
  # Layer 1 under PES: one batch shared by all particles (unbatched input, batched kernel).
  inputs = _random((2, 9, 9, 3), 0)
  kernels = _random((4, 3, 3, 3, 5), 1)
  for padding in ["VALID", [(0, 2), (1, 0)]]:
    want = jax.jit(jax.vmap(lambda k, p=padding: _lax_conv(inputs, k, 0.0, (2, 2), p)))(kernels)
    got = jax.jit(jax.vmap(lambda k, p=padding: conv.patch_conv(inputs, k, (2, 2), p)))(kernels)
    np.testing.assert_allclose(got, want, **TOLERANCE)


def test_one_spatial_axis():
  inputs, kernel = _random((2, 10, 3), 0), _random((4, 3, 5), 1)
  want = lax.conv_general_dilated(inputs, kernel, (3,), "SAME",
                                  dimension_numbers=("NHC", "HIO", "NHC"))
  for extraction in conv.PATCH_EXTRACTIONS:
    np.testing.assert_allclose(conv.patch_conv(inputs, kernel, (3,), "SAME", extraction), want,
                               **TOLERANCE)


@pytest.mark.parametrize("stride", [1, 2])
def test_patch_conv_module_is_a_drop_in_for_nn_conv(stride):
  inputs = _random((2, 7, 7, 3), 0)
  reference = nn.Conv(4, (3, 3), strides=stride)
  module = conv.PatchConv(4, (3, 3), strides=stride)
  params = reference.init(jax.random.PRNGKey(5), inputs)
  # Same names, shapes and initial values (same initialisers and RNG use).
  own = module.init(jax.random.PRNGKey(5), inputs)
  assert jax.tree.structure(own) == jax.tree.structure(params)
  for got, want in zip(jax.tree.leaves(own), jax.tree.leaves(params)):
    np.testing.assert_array_equal(got, want)
  params = jax.tree.map(lambda p: p + 0.1, params)  # a nonzero bias
  np.testing.assert_allclose(module.apply(params, inputs), reference.apply(params, inputs),
                             **TOLERANCE)
  # Extra leading batch axes are flattened and restored, as nn.Conv does.
  stacked = jnp.stack([inputs, 2 * inputs])
  np.testing.assert_allclose(module.apply(params, stacked), reference.apply(params, stacked),
                             **TOLERANCE)


def test_cnn_conv_impls_share_params_logits_and_gradients():
  images = _random((3, 9, 9, 3), 0)
  labels = jnp.array([1, 7, 3])
  lax_model, patch_model = models.CNN((4, 6), conv_impl="lax"), models.CNN((4, 6),
                                                                           conv_impl="patches")
  params = lax_model.init(jax.random.PRNGKey(1), images)["params"]
  patch_params = patch_model.init(jax.random.PRNGKey(1), images)["params"]
  assert sorted(params) == ["Conv_0", "Conv_1", "Dense_0"]
  assert jax.tree.structure(patch_params) == jax.tree.structure(params)
  for got, want in zip(jax.tree.leaves(patch_params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(got, want)
  params = jax.tree.map(lambda p: p + 0.05, params)

  def loss(model, params):
    logits = model.apply({"params": params}, images)
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(3), labels]), logits

  (_, want_logits), want_grads = jax.jit(jax.value_and_grad(
      lambda p: loss(lax_model, p), has_aux=True))(params)
  (_, got_logits), got_grads = jax.jit(jax.value_and_grad(
      lambda p: loss(patch_model, p), has_aux=True))(params)
  np.testing.assert_allclose(got_logits, want_logits, **TOLERANCE)
  for got, want in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(got, want, **TOLERANCE)


def test_conv_impl_choice_and_validation():
  assert conv.resolve_conv_impl("lax") == "lax"
  assert conv.resolve_conv_impl("patches") == "patches"
  expected = "patches" if jax.default_backend() == "cpu" else "lax"
  assert conv.resolve_conv_impl("auto") == expected
  with pytest.raises(ValueError, match="conv_impl"):
    conv.resolve_conv_impl("grouped")
  with pytest.raises(ValueError, match="conv_impl"):
    models.CNN(conv_impl="grouped")
  with pytest.raises(ValueError, match="extraction"):
    conv.patch_conv(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1)), (1, 1), extraction="fft")


@pytest.mark.parametrize("task_name", ["tiny_cnn", "cnn_fmnist_standin", "cnn_cifar10"])
def test_cnn_tasks_take_conv_impl_with_identical_params(task_name):
  shapes = {}
  for conv_impl in ("lax", "patches", "auto"):
    task = get_task(task_name, conv_impl=conv_impl)
    assert task.model.conv_impl == conv_impl
    shapes[conv_impl] = jax.eval_shape(task.init, jax.random.PRNGKey(0))
    assert task.spec(shapes[conv_impl]) == task.spec(shapes["lax"])
  assert shapes["patches"] == shapes["lax"] == shapes["auto"]


def test_tiny_cnn_loss_and_gradient_agree_across_impls():
  lax_task, patch_task = (get_task("tiny_cnn", conv_impl=impl) for impl in ("lax", "patches"))
  params = lax_task.init(jax.random.PRNGKey(0))
  batch = next(lax_task.datasets.train)
  want = jax.jit(jax.value_and_grad(lax_task.loss))(params, batch)
  got = jax.jit(jax.value_and_grad(patch_task.loss))(params, batch)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, **TOLERANCE)
