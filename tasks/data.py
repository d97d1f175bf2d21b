"""Datasets of the paper tasks: preparation into the tfds layout and loading.

The loading path is tensorflow-datasets. Prepared data is read with
``tfds.data_source`` from ``array_record`` files (no TensorFlow needed); a
dataset that tfds prepared itself in another format is read with ``tfds.load``
when TensorFlow is installed. Nothing is downloaded unless asked for.

Where the data comes from, offline first:

=================  ==========================================================
``fashion_mnist``  IDX files of Debian's ``dataset-fashion-mnist`` package
                   (prepared automatically on first use), or ``--from DIR``.
``cifar10``        ``--from cifar-10-binary.tar.gz`` (the binary release), or
                   tfds's own download where there is internet. No offline
                   copy exists; the tasks offer an explicitly named stand-in.
``lm1b``           ``--from DIR`` with ``train.txt``/``test.txt`` (one sentence
                   per line), or tfds's own download.
``brown_corpus``   the Brown Corpus shipped with this package (prepared
                   automatically on first use), under LM1B's feature spec.
=================  ==========================================================

Two tiny datasets ship in the package and bypass tfds entirely so that tests
and ``tiny_*`` tasks run anywhere: ``tiny_fashion_mnist`` (real FashionMNIST
images) and ``tiny_brown_corpus`` (the first Brown sentences).

Example:

  >>> import tasks.data as data
  >>> tiny = data.load_images("tiny_fashion_mnist", "train")
  >>> tiny["image"].shape, tiny["image"].dtype, tiny["label"].dtype
  ((512, 28, 28, 1), dtype('uint8'), dtype('int32'))
"""

from __future__ import annotations

import functools
import gzip
import lzma
import os
import pathlib
import sys
import tarfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
BROWN_CORPUS_FILE = PACKAGE_DIR / "corpora" / "brown.txt.xz"
TINY_FASHION_MNIST_FILE = PACKAGE_DIR / "corpora" / "tiny_fashion_mnist.npz"
DEBIAN_FASHION_MNIST_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
# One Brown document in every ten goes to the test split (documents, not
# sentences, so that no text is shared between the splits).
BROWN_TEST_EVERY = 10
TINY_BROWN_SENTENCES = {"train": 400, "test": 100}

IMAGE_DATASETS = ("fashion_mnist", "cifar10", "tiny_fashion_mnist")
TEXT_DATASETS = ("lm1b", "brown_corpus", "tiny_brown_corpus")
PREPARABLE = ("fashion_mnist", "cifar10", "lm1b", "brown_corpus")


class DatasetNotPreparedError(FileNotFoundError):
  """A dataset is not in the data directory; the message says how to prepare it."""


class DatasetSourceError(ValueError):
  """Files given to ``prepare`` are missing or not in the expected format."""


def default_data_dir() -> pathlib.Path:
  """``$UNF_LOPT_DATA_DIR``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
  for variable in ("UNF_LOPT_DATA_DIR", "TFDS_DATA_DIR"):
    if os.environ.get(variable):
      return pathlib.Path(os.environ[variable]).expanduser()
  return pathlib.Path("~/tensorflow_datasets").expanduser()


def _resolve(data_dir) -> pathlib.Path:
  return pathlib.Path(data_dir).expanduser() if data_dir else default_data_dir()


def prepare_command(name: str, data_dir=None) -> str:
  """The shell command that prepares ``name`` (used in error messages)."""
  where = f" --data-dir {data_dir}" if data_dir else ""
  source = {"cifar10": " --from cifar-10-binary.tar.gz",
            "lm1b": " --from DIR_WITH_train.txt_AND_test.txt"}.get(name, "")
  return f"unf-data prepare {name}{source}{where}"


# ---------------------------------------------------------------------------
# Readers of the raw source formats.


def read_idx(path: os.PathLike | str) -> np.ndarray:
  """Reads an IDX file (MNIST format, optionally gzipped) into a uint8 array."""
  path = pathlib.Path(path)
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rb") as f:
    raw = f.read()
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
    raise DatasetSourceError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
  ndim = raw[3]
  header = 4 + 4 * ndim
  shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  if len(raw) - header != int(np.prod(shape)):
    raise DatasetSourceError(
        f"{path}: header promises shape {shape} ({int(np.prod(shape))} bytes) but the file "
        f"holds {len(raw) - header} bytes after the header (truncated download?)")
  return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _find_idx(directory: pathlib.Path, stem: str) -> pathlib.Path:
  for candidate in (directory / f"{stem}.gz", directory / stem):
    if candidate.exists():
      return candidate
  raise DatasetSourceError(f"{directory} has no {stem}[.gz] (expected the four FashionMNIST "
                           "IDX files, as in Debian's dataset-fashion-mnist package)")


def read_fashion_mnist_idx(directory: os.PathLike | str) -> dict[str, dict[str, np.ndarray]]:
  """``{split: {"image": [N, 28, 28, 1] uint8, "label": [N] int32}}`` from IDX files."""
  directory = pathlib.Path(directory)
  splits = {}
  for split, prefix in (("train", "train"), ("test", "t10k")):
    images = read_idx(_find_idx(directory, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find_idx(directory, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or images.shape[0] != labels.shape[0]:
      raise DatasetSourceError(
          f"{directory}: {split} images {images.shape} do not match labels {labels.shape}")
    splits[split] = {"image": images[..., None], "label": labels.astype(np.int32)}
  return splits


def read_cifar10_binary(archive: os.PathLike | str) -> dict[str, dict[str, np.ndarray]]:
  """Reads ``cifar-10-binary.tar.gz`` (records of 1 label byte + 3072 pixel bytes)."""
  archive = pathlib.Path(archive)
  try:
    tar = tarfile.open(archive)
  except (OSError, tarfile.TarError) as error:
    raise DatasetSourceError(f"{archive} is not a readable tar archive: {error}") from None
  files = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
  record = 1 + 32 * 32 * 3
  splits = {}
  with tar:
    members = {pathlib.PurePath(m.name).name: m for m in tar.getmembers() if m.isfile()}
    for split, names in files.items():
      chunks = []
      for name in names:
        if name not in members:
          raise DatasetSourceError(
              f"{archive} has no {name}: expected the binary CIFAR-10 release "
              "(cifar-10-binary.tar.gz), not the python (pickle) one")
        raw = np.frombuffer(tar.extractfile(members[name]).read(), np.uint8)
        if raw.size % record:
          raise DatasetSourceError(f"{archive}:{name} is truncated")
        chunks.append(raw.reshape(-1, record))
      rows = np.concatenate(chunks)
      images = rows[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
      splits[split] = {"image": np.ascontiguousarray(images), "label": rows[:, 0].astype(np.int32)}
  return splits


def read_brown_corpus(path: os.PathLike | str = BROWN_CORPUS_FILE) -> dict[str, list[str]]:
  """Sentences of the shipped Brown Corpus, split by document into train/test."""
  splits = {"train": [], "test": []}
  document = -1
  with lzma.open(path, "rt", encoding="utf-8") as f:
    for line in f:
      line = line.rstrip("\n")
      if line.startswith("# "):
        document += 1
      elif line:
        splits["test" if document % BROWN_TEST_EVERY == BROWN_TEST_EVERY - 1 else "train"].append(line)
  return splits


def read_text_splits(directory: os.PathLike | str) -> dict[str, list[str]]:
  """``train.txt`` and ``test.txt`` (one sentence per line) of a directory."""
  directory = pathlib.Path(directory)
  splits = {}
  for split in ("train", "test"):
    path = directory / f"{split}.txt"
    if not path.exists():
      raise DatasetSourceError(f"{directory} has no {split}.txt (one sentence per line)")
    splits[split] = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
  return splits


# ---------------------------------------------------------------------------
# tfds builders that write local data into tfds's own layout, so that
# ``tfds.data_source(NAME)`` reads it exactly like data tfds prepared itself.


def _tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as error:  # pragma: no cover - tfds is a dependency
    raise ImportError("tensorflow-datasets is needed for the task data: "
                      "pip install tensorflow-datasets") from error
  return tfds


def _progress(items: Sequence[Any], description: str) -> Iterator[Any]:
  try:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  except ImportError:  # pragma: no cover - tqdm comes with tfds
    return iter(items)
  return iter(tqdm(items, desc=description, unit="ex", leave=False, disable=not sys.stderr.isatty()))


def _image_features(tfds, shape, classes):
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=shape),
      "label": tfds.features.ClassLabel(names=list(classes))})


@functools.cache
def _builder_classes():
  """Defined lazily so that importing this module does not import tfds."""
  tfds = _tfds()
  from PIL import Image  # pylint: disable=g-import-not-at-top

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
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
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


def _version_dir(name: str, data_dir: pathlib.Path) -> pathlib.Path | None:
  """The prepared version directory of ``name`` (the newest), or None."""
  root = data_dir / name
  if not root.is_dir():
    return None
  versions = sorted((p for p in root.iterdir() if (p / "dataset_info.json").exists()),
                    key=lambda p: tuple(int(x) if x.isdigit() else 0 for x in p.name.split(".")))
  return versions[-1] if versions else None


def is_prepared(name: str, data_dir=None) -> bool:
  """Whether ``name`` has a complete tfds preparation under ``data_dir``."""
  if name.startswith("tiny_"):
    return True
  return _version_dir(name, _resolve(data_dir)) is not None


def _local_source(name: str, source) -> dict[str, Any] | None:
  """Split data for ``name`` from ``source`` or from the local default, or None."""
  if name == "fashion_mnist":
    directory = pathlib.Path(source) if source else DEBIAN_FASHION_MNIST_DIR
    if source is None and not directory.exists():
      return None
    return read_fashion_mnist_idx(directory)
  if name == "cifar10":
    return read_cifar10_binary(source) if source else None
  if name == "lm1b":
    return read_text_splits(source) if source else None
  if name == "brown_corpus":
    return read_brown_corpus(source or BROWN_CORPUS_FILE)
  raise ValueError(f"unknown dataset {name!r}; preparable datasets: {', '.join(PREPARABLE)}")


def prepare(name: str, source=None, data_dir=None) -> pathlib.Path:
  """Prepares ``name`` into ``data_dir`` in the tfds layout (array_record files).

  Args:
    name: one of ``PREPARABLE``.
    source: local files to read (see the module docstring). Without it, the
      local default is used where one exists (Debian's FashionMNIST, the
      shipped Brown Corpus), else tfds downloads the data (needs internet).
    data_dir: tfds data directory; default ``default_data_dir()``.

  Returns:
    The prepared version directory, e.g. ``DATA_DIR/fashion_mnist/3.0.1``.
  """
  if name not in PREPARABLE:
    raise ValueError(f"unknown dataset {name!r}; preparable datasets: {', '.join(PREPARABLE)}")
  data_dir = _resolve(data_dir)
  splits = _local_source(name, source)
  tfds = _tfds()
  if splits is None:
    builder = tfds.builder(name, data_dir=str(data_dir))
    try:
      builder.download_and_prepare(file_format="array_record")
    except Exception as error:  # tfds raises many types; all mean the same here.
      raise DatasetNotPreparedError(
          f"tfds could not download and prepare {name!r} ({type(error).__name__}: {error}). "
          f"Without internet, prepare it from local files: {prepare_command(name, data_dir)}"
      ) from error
  else:
    builder = _builder_classes()[name](splits=splits, data_dir=str(data_dir),
                                       file_format="array_record")
    builder.download_and_prepare()
  return _version_dir(name, data_dir)


def _not_prepared_message(name: str, data_dir: pathlib.Path) -> str:
  message = f"dataset {name!r} is not prepared in {data_dir}. Prepare it with:\n  " \
            f"{prepare_command(name, data_dir)}"
  if name == "fashion_mnist":
    message += ("\n(offline: `apt-get install dataset-fashion-mnist` provides the IDX files in "
                f"{DEBIAN_FASHION_MNIST_DIR}, which are then prepared automatically)")
  if name == "cifar10":
    message += ("\nNo offline copy of CIFAR-10 exists on this machine. The task "
                "'cnn_fmnist_standin' runs the same CNN on FashionMNIST at 16x16 with 3 channels "
                "(a stand-in, named as such in every result).")
  return message


def _ensure_prepared(name: str, data_dir: pathlib.Path, auto_prepare: bool) -> pathlib.Path:
  version_dir = _version_dir(name, data_dir)
  if version_dir is not None:
    return version_dir
  if auto_prepare and (name == "brown_corpus" or
                       (name == "fashion_mnist" and DEBIAN_FASHION_MNIST_DIR.exists())):
    print(f"unf-lopt: preparing {name} into {data_dir} (first use)", file=sys.stderr)
    return prepare(name, data_dir=data_dir)
  raise DatasetNotPreparedError(_not_prepared_message(name, data_dir))


def _read_split(name: str, version_dir: pathlib.Path, split: str) -> list[dict[str, Any]]:
  """All examples of a split, via ``data_source`` (array_record) or ``tfds.load``."""
  tfds = _tfds()
  builder = tfds.builder_from_directory(str(version_dir))
  if split not in builder.info.splits:
    raise DatasetNotPreparedError(
        f"{version_dir} has no split {split!r} (it has {', '.join(builder.info.splits)})")
  file_format = str(getattr(builder.info.file_format, "value", builder.info.file_format) or "")
  if "array_record" in file_format:
    source = builder.as_data_source(split=split)
    return source.__getitems__(list(range(len(source))))
  try:
    return list(tfds.as_numpy(builder.as_dataset(split=split)))
  except ImportError as error:
    raise DatasetNotPreparedError(
        f"{version_dir} holds {name} as {file_format or 'tfrecord'}, which needs TensorFlow to "
        f"read. Install tensorflow, or re-prepare it as array_record: "
        f"{prepare_command(name)}") from error


@functools.lru_cache(maxsize=8)
def _cached_images(name: str, split: str, data_dir: pathlib.Path, auto_prepare: bool):
  if name == "tiny_fashion_mnist":
    with np.load(TINY_FASHION_MNIST_FILE, allow_pickle=False) as tiny:
      return {"image": tiny[f"{split}_image"], "label": tiny[f"{split}_label"].astype(np.int32)}
  version_dir = _ensure_prepared(name, data_dir, auto_prepare)
  examples = _read_split(name, version_dir, split)
  images = np.stack([np.asarray(e["image"], np.uint8) for e in examples])
  labels = np.asarray([e["label"] for e in examples], np.int32)
  if images.ndim == 3:
    images = images[..., None]
  return {"image": images, "label": labels}


def load_images(name: str, split: str, data_dir=None, auto_prepare: bool = True):
  """``{"image": [N, H, W, C] uint8, "label": [N] int32}`` of an image dataset split.

  Splits are the dataset's own (``train``, ``test``). Missing data raises
  `DatasetNotPreparedError` with the command that prepares it.
  """
  if name not in IMAGE_DATASETS:
    raise ValueError(f"{name!r} is not an image dataset ({', '.join(IMAGE_DATASETS)})")
  arrays = _cached_images(name, split, _resolve(data_dir), auto_prepare)
  return {key: value.copy() for key, value in arrays.items()}


@functools.lru_cache(maxsize=8)
def _cached_text(name: str, split: str, data_dir: pathlib.Path, auto_prepare: bool):
  if name == "tiny_brown_corpus":
    return tuple(read_brown_corpus()[split][:TINY_BROWN_SENTENCES[split]])
  version_dir = _ensure_prepared(name, data_dir, auto_prepare)
  texts = [e["text"] for e in _read_split(name, version_dir, split)]
  return tuple(t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in texts)


def load_text(name: str, split: str, data_dir=None, auto_prepare: bool = True) -> list[str]:
  """The sentences of a text dataset split (``train`` or ``test``)."""
  if name not in TEXT_DATASETS:
    raise ValueError(f"{name!r} is not a text dataset ({', '.join(TEXT_DATASETS)})")
  return list(_cached_text(name, split, _resolve(data_dir), auto_prepare))


def resolve_text_dataset(name: str, data_dir=None) -> str:
  """``lm1b`` if it is prepared, else the shipped ``brown_corpus`` (with a notice)."""
  if name != "lm1b" or is_prepared("lm1b", data_dir):
    return name
  print(f"unf-lopt: lm1b is not prepared in {_resolve(data_dir)}; using the shipped Brown Corpus "
        f"instead (prepare LM1B with `{prepare_command('lm1b')}`)", file=sys.stderr)
  return "brown_corpus"
