"""Datasets of the paper tasks: preparation into the tfds layout and loading.

Three modules, one concern each: `readers` parses the raw source files,
`builders` holds the tfds builders that write them into tfds's layout, and
`store` knows the data directory (what is available, ``prepare``,
``load_images``, ``load_text``). Nothing is downloaded unless asked for;
preparing needs the ``data`` extra (``pip install "unf-lopt[data]"``).

Where the data comes from, offline first:

======================  =====================================================
``fashion_mnist``       IDX files of Debian's ``dataset-fashion-mnist``
                        package (prepared automatically on first use), or
                        ``--from DIR``.
``cifar10``             ``--from cifar-10-binary.tar.gz`` (the binary
                        release), or tfds's own download where there is
                        internet. No offline copy exists; the tasks offer an
                        explicitly named stand-in.
``lm1b``                ``--from DIR`` with ``train.txt``/``test.txt`` (one
                        sentence per line), or tfds's own download.
``brown_corpus``        the Brown Corpus shipped with this package (prepared
                        automatically on first use), under LM1B's features.
``tiny_fashion_mnist``  512 real FashionMNIST images embedded in the package.
``tiny_brown_corpus``   the first Brown sentences, embedded in the package.
======================  =====================================================

The two tiny datasets bypass tfds entirely, so that tests and ``tiny_*``
tasks run anywhere, on the core install.

Example:

  >>> from unf_lopt.tasks import data
  >>> tiny = data.load_images("tiny_fashion_mnist", "train")
  >>> tiny["image"].shape, tiny["image"].dtype, tiny["label"].dtype
  ((512, 28, 28, 1), dtype('uint8'), dtype('int32'))
  >>> data.availability("tiny_brown_corpus")
  (True, 'embedded')
"""

from unf_lopt.tasks.data.builders import (CIFAR10_CLASSES, FASHION_MNIST_CLASSES,
                                          builder_classes)
from unf_lopt.tasks.data.readers import (BROWN_CORPUS_FILE, BROWN_TEST_EVERY, CORPORA_DIR,
                                         TINY_FASHION_MNIST_FILE, DatasetSourceError,
                                         read_brown_corpus, read_cifar10_binary,
                                         read_fashion_mnist_idx, read_idx, read_text_splits)
from unf_lopt.tasks.data.store import (DATASETS, DEBIAN_FASHION_MNIST_DIR, EMBEDDED,
                                       IMAGE_DATASETS, PREPARABLE, TEXT_DATASETS,
                                       TINY_BROWN_SENTENCES, DatasetNotPreparedError,
                                       availability, default_data_dir, is_prepared, load_images,
                                       load_text, prepare, prepare_command,
                                       resolve_text_dataset)

__all__ = [
    "BROWN_CORPUS_FILE", "BROWN_TEST_EVERY", "CIFAR10_CLASSES", "CORPORA_DIR", "DATASETS",
    "DEBIAN_FASHION_MNIST_DIR", "EMBEDDED", "FASHION_MNIST_CLASSES", "IMAGE_DATASETS",
    "PREPARABLE", "TEXT_DATASETS", "TINY_BROWN_SENTENCES", "TINY_FASHION_MNIST_FILE",
    "DatasetNotPreparedError", "DatasetSourceError", "availability", "builder_classes",
    "default_data_dir", "is_prepared", "load_images", "load_text", "prepare", "prepare_command",
    "read_brown_corpus", "read_cifar10_binary", "read_fashion_mnist_idx", "read_idx",
    "read_text_splits", "resolve_text_dataset",
]
