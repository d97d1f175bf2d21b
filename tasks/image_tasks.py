"""Image classification tasks: the MLP on FashionMNIST and the CNN on CIFAR-10."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import unf_lopt as U
from unf_lopt.tasks import base, data, models, paper_specs


def resize_images(images: np.ndarray, size: int, channels: int | None = None) -> np.ndarray:
  """uint8 ``[N, H, W, C]`` -> float32 ``[N, size, size, C']`` in [0, 1].

  Bilinear without antialiasing, like ``tf.image.resize``'s default, which the
  learned_optimization image datasets use. ``channels=3`` repeats a grey
  channel (the FashionMNIST stand-in for CIFAR-10).
  """
  images = jnp.asarray(images, jnp.float32) / 255.0
  if images.shape[1:3] != (size, size):
    shape = (images.shape[0], size, size, images.shape[3])
    images = jax.image.resize(images, shape, method="bilinear", antialias=False)
  if channels is not None and channels != images.shape[-1]:
    if images.shape[-1] != 1:
      raise ValueError(f"cannot turn {images.shape[-1]} channels into {channels}")
    images = jnp.repeat(images, channels, axis=-1)
  return np.asarray(images)


class ImageClassificationTask(base.Task):
  """Softmax cross-entropy of a flax classifier on a resized image dataset.

  Args:
    name: registry name.
    dataset: an image dataset of `tasks.data` (``fashion_mnist``, ``cifar10``,
      ``tiny_fashion_mnist``).
    image_size: images are resized to ``image_size x image_size``.
    model: ``models.MLP`` (flattens) or ``models.CNN``.
    batch_size: examples per batch.
    channels: force this many channels (repeats a grey channel).
    data_dir: tfds data directory (default `tasks.data.default_data_dir`).
    spec: ``"true"`` (default): `spec` is the permutation symmetry, filter
      taps fixed. ``"paper"``: the UNF authors' spec, which reproduces the
      paper's Table 3 counts; for the CNN it permutes filter taps, which is not
      a symmetry (`tasks.paper_specs.cnn_paper_spec`). Kept as ``spec_kind``.
  """

  num_classes = 10

  def __init__(self, name: str, *, dataset: str, image_size: int, model: nn.Module,
               batch_size: int = 128, channels: int | None = None, data_dir=None,
               spec: str = "true"):
    if dataset not in data.IMAGE_DATASETS:
      raise ValueError(f"{name}: unknown image dataset {dataset!r} ({data.IMAGE_DATASETS})")
    self.spec_kind = paper_specs.check_spec_kind(spec, name)
    self.name = name
    self.dataset_name = dataset
    self.image_size = image_size
    self.channels = channels or (3 if dataset == "cifar10" else 1)
    self.batch_size = batch_size
    self.data_dir = data_dir
    self._model = model
    if isinstance(model, models.MLP):
      self.io_axes = frozenset({"n0", f"n{len(model.hidden_sizes) + 1}"})
    else:
      self.io_axes = frozenset({"c0", "classes"})

  @property
  def model(self) -> nn.Module:
    return self._model

  def dummy_batch(self):
    return {"image": np.zeros((self.batch_size, self.image_size, self.image_size, self.channels),
                              np.float32),
            "label": np.zeros((self.batch_size,), np.int32)}

  def _inputs(self, batch):
    return batch["image"]

  def _read_split(self, split):
    raw = data.load_images(self.dataset_name, split, self.data_dir)
    return {"image": resize_images(raw["image"], self.image_size, self.channels),
            "label": raw["label"]}

  def metrics(self, params, batch):
    logits = self.model.apply({"params": params}, batch["image"])
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return {"loss": losses.mean(), "accuracy": accuracy}

  def spec(self, params=None):
    if params is None:
      params = jax.eval_shape(self.init, jax.random.PRNGKey(0))
    if self.spec_kind == "paper":
      if isinstance(self.model, models.MLP):
        return paper_specs.mlp_paper_spec(params)
      return paper_specs.cnn_paper_spec(params)
    if isinstance(self.model, models.MLP):
      return U.mlp_spec(params)
    layers = [key for key in params if key.startswith("Conv_")]
    names = [f"c{i}" for i in range(len(layers) + 1)]
    spec = {layer: U.conv_spec(names[i], names[i + 1]) for i, layer in enumerate(layers)}
    spec["Dense_0"] = U.dense_spec(names[-1], "classes")
    return spec


def mlp_fmnist(image_size: int = 8, hidden_sizes: Sequence[int] = (32,), batch_size: int = 128,
               data_dir=None, spec: str = "true",
               name: str = "mlp_fmnist") -> ImageClassificationTask:
  """64 -> 32 -> 10 ReLU MLP on FashionMNIST resized to 8x8, batch 128.

  The UNF paper's MLP task (Zhou et al. 2024, Appendix B.1). ``spec="paper"``
  gives the authors' spec, here the same as the default.
  """
  return ImageClassificationTask(name, dataset="fashion_mnist", image_size=image_size,
                                 model=models.MLP(tuple(hidden_sizes)), batch_size=batch_size,
                                 data_dir=data_dir, spec=spec)


def cnn_cifar10(image_size: int = 16, batch_size: int = 128, data_dir=None, spec: str = "true",
                conv_impl: str = "auto", name: str = "cnn_cifar10") -> ImageClassificationTask:
  """The paper's CNN on CIFAR-10 downsized to 16x16 (``image_size=8``: learned_optimization's).

  ``conv_impl``: how the convolutions are computed (`tasks.models.CNN`); ``"auto"``
  is the fast one for the backend, and every choice has the same parameters.
  """
  return ImageClassificationTask(name, dataset="cifar10", image_size=image_size,
                                 model=models.CNN(conv_impl=conv_impl), batch_size=batch_size,
                                 data_dir=data_dir, spec=spec)


def cnn_fmnist_standin(image_size: int = 16, batch_size: int = 128, data_dir=None,
                       spec: str = "true", conv_impl: str = "auto",
                       name: str = "cnn_fmnist_standin") -> ImageClassificationTask:
  """Stand-in for ``cnn_cifar10`` where CIFAR-10 is unavailable: FashionMNIST, 3 channels.

  ``conv_impl`` as in `cnn_cifar10`.
  """
  return ImageClassificationTask(name, dataset="fashion_mnist", image_size=image_size,
                                 model=models.CNN(conv_impl=conv_impl), batch_size=batch_size,
                                 channels=3, data_dir=data_dir, spec=spec)


def tiny_mlp(batch_size: int = 32, spec: str = "true",
             name: str = "tiny_mlp") -> ImageClassificationTask:
  """64 -> 8 -> 10 MLP on the 512 shipped FashionMNIST images (8x8). For tests."""
  return ImageClassificationTask(name, dataset="tiny_fashion_mnist", image_size=8,
                                 model=models.MLP((8,)), batch_size=batch_size, spec=spec)


def tiny_cnn(batch_size: int = 32, spec: str = "true", conv_impl: str = "auto",
             name: str = "tiny_cnn") -> ImageClassificationTask:
  """4- and 8-channel CNN on the shipped FashionMNIST images at 8x8x3. For tests.

  ``conv_impl`` as in `cnn_cifar10`.
  """
  return ImageClassificationTask(name, dataset="tiny_fashion_mnist", image_size=8,
                                 model=models.CNN(channels=(4, 8), conv_impl=conv_impl),
                                 batch_size=batch_size, channels=3, spec=spec)
