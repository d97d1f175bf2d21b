"""The data directory: which datasets are available, preparing them, loading splits.

Prepared data is read with tfds's ``data_source`` from ``array_record`` files
(no TensorFlow needed); a dataset that tfds prepared itself in another format
is read with ``tfds.load`` where TensorFlow is installed. The tiny datasets
are embedded in the package and never touch tfds.
"""

from __future__ import annotations

import functools
import os
import pathlib
import re
import sys
from typing import Any

import numpy as np

from unf_lopt.tasks.data import builders, readers

DEBIAN_FASHION_MNIST_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
TINY_BROWN_SENTENCES = {"train": 400, "test": 100}

IMAGE_DATASETS = ("fashion_mnist", "cifar10", "tiny_fashion_mnist")
TEXT_DATASETS = ("lm1b", "brown_corpus", "tiny_brown_corpus")
PREPARABLE = ("fashion_mnist", "cifar10", "lm1b", "brown_corpus")
EMBEDDED = ("tiny_fashion_mnist", "tiny_brown_corpus")
DATASETS = PREPARABLE + EMBEDDED


class DatasetNotPreparedError(FileNotFoundError):
  """A dataset is not in the data directory; the message says how to prepare it."""


def default_data_dir() -> pathlib.Path:
  """``$UNF_LOPT_DATA_DIR``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
  for variable in ("UNF_LOPT_DATA_DIR", "TFDS_DATA_DIR"):
    if os.environ.get(variable):
      return pathlib.Path(os.environ[variable]).expanduser()
  return pathlib.Path("~/tensorflow_datasets").expanduser()


def _resolve(data_dir) -> pathlib.Path:
  return pathlib.Path(data_dir).expanduser() if data_dir else default_data_dir()


def _unknown(name: str, known) -> ValueError:
  return ValueError(f"unknown dataset {name!r}; preparable datasets: {', '.join(known)}")


def prepare_command(name: str, data_dir=None) -> str:
  """The shell command that prepares ``name`` (used in error messages)."""
  where = f" --data-dir {data_dir}" if data_dir else ""
  source = {"cifar10": " --from cifar-10-binary.tar.gz",
            "lm1b": " --from DIR_WITH_train.txt_AND_test.txt"}.get(name, "")
  return f"unf-data prepare {name}{source}{where}"


def _version_dir(name: str, data_dir: pathlib.Path) -> pathlib.Path | None:
  """The prepared version directory of ``name`` (the newest), or None."""
  root = data_dir / name
  if not root.is_dir():
    return None
  # tfds writes into ``incomplete.*`` and renames to the version when done, so
  # only a directory named like a version (``3.0.1``) is a finished preparation.
  versions = sorted((p for p in root.iterdir() if re.fullmatch(r"\d+(\.\d+)*", p.name)
                     and (p / "dataset_info.json").exists()),
                    key=lambda p: tuple(int(x) for x in p.name.split(".")))
  return versions[-1] if versions else None


def is_prepared(name: str, data_dir=None) -> bool:
  """Whether ``name`` has a complete tfds preparation under ``data_dir`` (tiny ones always)."""
  if name in EMBEDDED:
    return True
  return _version_dir(name, _resolve(data_dir)) is not None


def _auto_preparable(name: str) -> bool:
  """Whether the first load prepares ``name`` from files already on this machine."""
  return name == "brown_corpus" or (name == "fashion_mnist" and DEBIAN_FASHION_MNIST_DIR.exists())


def availability(name: str, data_dir=None) -> tuple[bool, str]:
  """``(available, how)``: whether loading ``name`` works without further steps, and why.

  ``how`` is ``"prepared"``, ``"embedded"`` (ships inside the package),
  ``"shipped, prepared on first use"`` (the Brown Corpus),
  ``"local files, prepared on first use"`` (Debian's FashionMNIST) or
  ``"missing"``.
  """
  if name not in DATASETS:
    raise _unknown(name, DATASETS)
  if name in EMBEDDED:
    return True, "embedded"
  if is_prepared(name, data_dir):
    return True, "prepared"
  if name == "brown_corpus":
    return True, "shipped, prepared on first use"
  if _auto_preparable(name):
    return True, f"local files in {DEBIAN_FASHION_MNIST_DIR}, prepared on first use"
  return False, "missing"


def _local_source(name: str, source) -> dict[str, Any] | None:
  """Split data for ``name`` from ``source`` or from the local default, or None."""
  if name == "fashion_mnist":
    directory = pathlib.Path(source) if source else DEBIAN_FASHION_MNIST_DIR
    if source is None and not directory.exists():
      return None
    return readers.read_fashion_mnist_idx(directory)
  if name == "cifar10":
    return readers.read_cifar10_binary(source) if source else None
  if name == "lm1b":
    return readers.read_text_splits(source) if source else None
  if name == "brown_corpus":
    return readers.read_brown_corpus(source or readers.BROWN_CORPUS_FILE)
  raise _unknown(name, PREPARABLE)


def prepare(name: str, source=None, data_dir=None) -> pathlib.Path:
  """Prepares ``name`` into ``data_dir`` in the tfds layout (array_record files).

  Args:
    name: one of ``PREPARABLE``.
    source: local files to read (see the package docstring). Without it, the
      local default is used where one exists (Debian's FashionMNIST, the
      shipped Brown Corpus), else tfds downloads the data (needs internet).
    data_dir: tfds data directory; default ``default_data_dir()``.

  Returns:
    The prepared version directory, e.g. ``DATA_DIR/fashion_mnist/3.0.1``.
  """
  if name not in PREPARABLE:
    raise _unknown(name, PREPARABLE)
  data_dir = _resolve(data_dir)
  tfds = builders.tfds_module()  # before reading: a missing extra fails at once
  splits = _local_source(name, source)
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
    builder = builders.builder_classes()[name](splits=splits, data_dir=str(data_dir),
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
  if auto_prepare and _auto_preparable(name):
    print(f"unf-lopt: preparing {name} into {data_dir} (first use)", file=sys.stderr)
    return prepare(name, data_dir=data_dir)
  raise DatasetNotPreparedError(_not_prepared_message(name, data_dir))


def _read_split(name: str, version_dir: pathlib.Path, split: str) -> list[dict[str, Any]]:
  """All examples of a split, via ``data_source`` (array_record) or ``tfds.load``."""
  tfds = builders.tfds_module()
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
    with np.load(readers.TINY_FASHION_MNIST_FILE, allow_pickle=False) as tiny:
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
    return tuple(readers.read_brown_corpus()[split][:TINY_BROWN_SENTENCES[split]])
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
