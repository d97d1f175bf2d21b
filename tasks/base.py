"""The task contract: what an optimizer is trained on (learned_optimization's ``Task``).

A `Task` owns a flax model, a loss, the weight-space specification of its
parameters and its data. `TaskFamily` samples task instances for
meta-training: here every instance shares the architecture and differs in
its initialisation and data-order seed.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Batch = Mapping[str, np.ndarray]
SPLITS = ("train", "valid", "test")
# The valid split is this fraction of the dataset's own training split.
VALID_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class Datasets:
  """Infinite iterators of numpy batches, as learned_optimization's ``Datasets``."""

  train: Iterator[Batch]
  valid: Iterator[Batch]
  test: Iterator[Batch]


def batch_iterator(arrays: Mapping[str, np.ndarray], batch_size: int,
                   seed: int) -> Iterator[dict[str, np.ndarray]]:
  """Shuffled batches without replacement, reshuffled every epoch; deterministic per seed."""
  size = len(next(iter(arrays.values())))
  if size < batch_size:
    raise ValueError(f"batch size {batch_size} exceeds the {size} examples of the split")
  rng = np.random.default_rng(seed)
  while True:
    order = rng.permutation(size)
    for start in range(0, size - batch_size + 1, batch_size):
      rows = np.sort(order[start:start + batch_size])
      yield {key: value[rows] for key, value in arrays.items()}


def split_off_valid(arrays: Mapping[str, np.ndarray], split: str) -> dict[str, np.ndarray]:
  """The ``train`` or ``valid`` part of a dataset's training split (fixed random 90/10)."""
  size = len(next(iter(arrays.values())))
  order = np.random.default_rng(0).permutation(size)
  num_valid = max(1, int(round(size * VALID_FRACTION)))
  rows = np.sort(order[:num_valid] if split == "valid" else order[num_valid:])
  return {key: value[rows] for key, value in arrays.items()}


class Task(abc.ABC):
  """An inner problem: ``init``, ``loss``, ``spec``, ``datasets``, ``normalizer``.

  Subclasses provide the model, the dataset split arrays, the loss and the spec.

  Attributes:
    name: registry name.
    batch_size: examples per batch.
    num_classes: size of the predicted distribution (classes or vocabulary),
      used by the meta-loss normaliser.
    io_axes: spec names of axes that index the data (input features,
      classes, vocabulary). Permuting any other named axis of the parameters
      leaves the loss unchanged; these need the data relabelled too.
    data_seed: seed of the ``datasets`` iterators.
  """

  name: str
  batch_size: int
  num_classes: int
  io_axes: frozenset[str]
  data_seed: int = 0

  @property
  @abc.abstractmethod
  def model(self) -> nn.Module:
    """The flax module whose ``params`` the optimizer trains."""

  @abc.abstractmethod
  def dummy_batch(self) -> dict[str, np.ndarray]:
    """A zero batch with the shapes and dtypes of real ones (no data is read)."""

  @abc.abstractmethod
  def _read_split(self, split: str) -> dict[str, np.ndarray]:
    """Reads and preprocesses the dataset's own ``train`` or ``test`` split."""

  def _dataset_split(self, split: str) -> dict[str, np.ndarray]:
    """`_read_split`, read once per task instance."""
    # A per-instance dict rather than functools.cache on the method, which
    # would keep every task (and its arrays) alive for the process's lifetime.
    cache = self.__dict__.setdefault("_split_cache", {})
    if split not in cache:
      cache[split] = self._read_split(split)
    return cache[split]

  @abc.abstractmethod
  def metrics(self, params, batch: Batch) -> dict[str, jax.Array]:
    """``{"loss": ..., "accuracy": ...}`` of a batch (accuracy over predicted tokens/labels)."""

  @abc.abstractmethod
  def spec(self, params=None) -> Any:
    """The weight-space specification of the parameters (see `unf_lopt.validate_spec`)."""

  def init(self, key: jax.Array):
    """Fresh parameters."""
    inputs = self._inputs(self.dummy_batch())
    return self.model.init(key, inputs)["params"]

  def _inputs(self, batch: Batch):
    raise NotImplementedError

  def loss(self, params, batch: Batch, key: jax.Array | None = None) -> jax.Array:
    """Mean negative log-likelihood of a batch. ``key`` is unused (deterministic models)."""
    del key
    return self.metrics(params, batch)["loss"]

  def normalizer(self, loss: jax.Array) -> jax.Array:
    """Meta-loss normalisation: clip at 1.5 x log(num_classes), as learned_optimization."""
    return jnp.clip(loss, 0.0, 1.5 * math.log(self.num_classes))

  def data_arrays(self, split: str) -> dict[str, np.ndarray]:
    """All preprocessed examples of ``train``, ``valid`` or ``test``."""
    if split not in SPLITS:
      raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if split == "test":
      return self._dataset_split("test")
    return split_off_valid(self._dataset_split("train"), split)

  def dataset(self, split: str, seed: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Infinite shuffled batches of one split."""
    return batch_iterator(self.data_arrays(split), self.batch_size, seed)

  @property
  def datasets(self) -> Datasets:
    return Datasets(*(self.dataset(split, self.data_seed + index)
                      for index, split in enumerate(SPLITS)))


class TaskFamily:
  """Samples task instances for meta-training (learned_optimization's ``TaskFamily``).

  ``sample(key)`` returns a config (here: a PRNG key that seeds the
  instance's parameters); ``task_fn(cfg)`` returns its `Task`. All instances
  share the architecture, so their parameters stack for ``vmap``.
  """

  def __init__(self, task: Task):
    self.task = task
    self.name = task.name

  def sample(self, key: jax.Array) -> jax.Array:
    return jax.random.fold_in(key, 0)

  def task_fn(self, cfg: jax.Array) -> Task:
    del cfg
    return self.task

  def init(self, cfg: jax.Array):
    """Initial parameters of the instance ``cfg``."""
    return self.task.init(cfg)
