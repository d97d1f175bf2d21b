"""Rebuilds `tiny_fashion_mnist.npz`: the first real FashionMNIST examples.

Made with ``python -m unf_lopt.tasks.corpora.build_tiny_fashion_mnist`` from the IDX
files of Debian's ``dataset-fashion-mnist`` package. FashionMNIST is (c)
Zalando SE, MIT licence. The file holds ``train_image`` [512, 28, 28, 1],
``train_label`` [512], ``test_image`` [128, 28, 28, 1], ``test_label`` [128].
"""

import sys

import numpy as np

from unf_lopt.tasks import data

SIZES = {"train": 512, "test": 128}


def main(source_dir: str = str(data.DEBIAN_FASHION_MNIST_DIR),
         output_path: str = str(data.TINY_FASHION_MNIST_FILE)) -> None:
  splits = data.read_fashion_mnist_idx(source_dir)
  arrays = {}
  for split, size in SIZES.items():
    arrays[f"{split}_image"] = splits[split]["image"][:size]
    arrays[f"{split}_label"] = splits[split]["label"][:size].astype(np.uint8)
  np.savez_compressed(output_path, **arrays)
  print({k: v.shape for k, v in arrays.items()}, "->", output_path)


if __name__ == "__main__":
  main(*sys.argv[1:])
