"""``unf-data``: prepare and list the task datasets.

  unf-data list [--data-dir DIR]
  unf-data prepare NAME [--from PATH] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import sys

from unf_lopt.tasks import data


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="unf-data", description=__doc__.split("\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)
  listing = commands.add_parser("list", help="datasets and whether each is prepared")
  listing.add_argument("--data-dir", help="tfds data directory (default: %(default)s)",
                       default=str(data.default_data_dir()))
  prepare = commands.add_parser(
      "prepare", help="prepare a dataset into the tfds layout (array_record)",
      description="Sources: fashion_mnist: a directory of IDX files (default: Debian's "
                  f"{data.DEBIAN_FASHION_MNIST_DIR}); cifar10: cifar-10-binary.tar.gz; lm1b: a "
                  "directory with train.txt and test.txt; brown_corpus: the shipped corpus. "
                  "Without --from and without a local default, tfds downloads the data.")
  prepare.add_argument("name", choices=data.PREPARABLE)
  prepare.add_argument("--from", dest="source", help="local files to prepare from")
  prepare.add_argument("--data-dir", help="tfds data directory (default: %(default)s)",
                       default=str(data.default_data_dir()))
  return parser


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  if args.command == "list":
    for name in data.PREPARABLE:
      state = "prepared" if data.is_prepared(name, args.data_dir) else "missing"
      print(f"{name:15s} {state:9s} {data.prepare_command(name, args.data_dir)}")
    return 0
  try:
    path = data.prepare(args.name, args.source, args.data_dir)
  except (data.DatasetSourceError, data.DatasetNotPreparedError, FileNotFoundError) as error:
    print(f"unf-data: {error}", file=sys.stderr)
    return 2
  print(f"prepared {args.name} in {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
