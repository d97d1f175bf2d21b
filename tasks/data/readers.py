"""Readers of the raw source formats: plain files in, numpy arrays or sentences out.

Nothing here needs tensorflow-datasets: these functions only parse files, so
they run on the core install.
"""

from __future__ import annotations

import gzip
import lzma
import os
import pathlib
import tarfile

import numpy as np

# The corpora ship inside ``unf_lopt.tasks`` (setup.cfg package_data).
CORPORA_DIR = pathlib.Path(__file__).resolve().parent.parent / "corpora"
BROWN_CORPUS_FILE = CORPORA_DIR / "brown.txt.xz"
TINY_FASHION_MNIST_FILE = CORPORA_DIR / "tiny_fashion_mnist.npz"

# One Brown document in every ten goes to the test split (documents, not
# sentences, so that no text is shared between the splits).
BROWN_TEST_EVERY = 10


class DatasetSourceError(ValueError):
  """Files given to ``prepare`` are missing or not in the expected format."""


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
    # tarfile lists every compression it tried, one per line; the first line says enough.
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    raise DatasetSourceError(f"{archive} is not a readable tar archive ({reason}); expected the "
                             "binary CIFAR-10 release cifar-10-binary.tar.gz") from None
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
        is_test = document % BROWN_TEST_EVERY == BROWN_TEST_EVERY - 1
        splits["test" if is_test else "train"].append(line)
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
