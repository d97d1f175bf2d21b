"""tfds builders that write local data into tfds's own layout.

After ``prepare``, ``tfds.data_source(NAME)`` reads the data exactly like data
tfds prepared itself. The classes subclass tfds types, so they are made on
first use: importing this module imports neither tfds nor PIL (the ``data``
extra).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from unf_lopt import extras

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


def tfds_module():
  """``tensorflow_datasets``, or ImportError naming the ``data`` extra."""
  return extras.require("tensorflow_datasets", "data")


def _progress(items: Sequence[Any], description: str) -> Iterator[Any]:
  if not sys.stderr.isatty():
    return iter(items)
  return iter(extras.progress_bar(iterable=items, desc=description, unit="ex", leave=False))


def _image_features(tfds, shape, classes):
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=shape),
      "label": tfds.features.ClassLabel(names=list(classes))})


@functools.cache
def builder_classes() -> dict[str, type]:
  """``{dataset name: tfds builder class}``; each takes ``splits={split: data}``."""
  tfds = tfds_module()
  pil_image = extras.require("PIL.Image", "data")

  class _LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes the splits given at construction; ``splits`` is ``{split: data}``."""

    def __init__(self, *, splits, **kwargs):
      self._splits = splits
      super().__init__(**kwargs)

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(split) for split in self._splits}

  class _LocalImages(_LocalBuilder, skip_registration=True):

    def _generate_examples(self, split):
      data = self._splits[split]
      for index in _progress(range(len(data["label"])), f"{self.name} {split}"):
        image = data["image"][index]
        # PIL encodes the PNG, so no TensorFlow is needed to write images.
        pil = pil_image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        example = {"image": pil, "label": int(data["label"][index])}
        if self.name == "cifar10":
          example["id"] = f"{split}_{index:05d}"
        yield index, example

  class FashionMnist(_LocalImages, skip_registration=True):
    name = "fashion_mnist"
    VERSION = tfds.core.Version("3.0.1")

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self, features=_image_features(tfds, (28, 28, 1), FASHION_MNIST_CLASSES),
          supervised_keys=("image", "label"),
          description="FashionMNIST, prepared offline by unf-lopt from IDX files.")

  class Cifar10(_LocalImages, skip_registration=True):
    name = "cifar10"
    VERSION = tfds.core.Version("3.0.2")

    def _info(self):
      features = _image_features(tfds, (32, 32, 3), CIFAR10_CLASSES)
      features = tfds.features.FeaturesDict({"id": tfds.features.Text(), **features})
      return tfds.core.DatasetInfo(
          builder=self, features=features, supervised_keys=("image", "label"),
          description="CIFAR-10, prepared offline by unf-lopt from the binary release.")

  class _LocalText(_LocalBuilder, skip_registration=True):

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self, features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
          description=f"{self.name}, prepared offline by unf-lopt from plain text.")

    def _generate_examples(self, split):
      for index, sentence in enumerate(_progress(self._splits[split], f"{self.name} {split}")):
        yield index, {"text": sentence}

  class Lm1b(_LocalText, skip_registration=True):
    name = "lm1b"
    VERSION = tfds.core.Version("1.1.0")

  class BrownCorpus(_LocalText, skip_registration=True):
    name = "brown_corpus"
    VERSION = tfds.core.Version("1.0.0")

  return {"fashion_mnist": FashionMnist, "cifar10": Cifar10, "lm1b": Lm1b,
          "brown_corpus": BrownCorpus}
