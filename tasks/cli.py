"""``unf-data``: list and prepare the task datasets, and list the tasks.

  unf-data list [--data-dir DIR]
  unf-data prepare NAME [--from PATH] [--data-dir DIR]
  unf-data tasks

Every input is checked before anything is read or written: a bad one ends the
command with exit status 2 and one line naming the flag or file.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import sys

from unf_lopt import extras
from unf_lopt.tasks import command_line as cl
from unf_lopt.tasks import data

# What ``--from`` must be for each dataset: (a directory?, what it holds).
_SOURCES = {
    "fashion_mnist": (True, "a directory with the four FashionMNIST IDX files"),
    "cifar10": (False, "the binary release cifar-10-binary.tar.gz"),
    "lm1b": (True, "a directory with train.txt and test.txt (one sentence per line)"),
    "brown_corpus": (False, "an xz-compressed Brown Corpus text like the shipped one"),
}


def _preparable_name(text: str) -> str:
  """A dataset ``prepare`` accepts (an argparse ``type``); the embedded ones need nothing."""
  if text in data.EMBEDDED:
    raise argparse.ArgumentTypeError(f"{text} is embedded in the package; nothing to prepare")
  if text not in data.PREPARABLE:
    raise argparse.ArgumentTypeError(
        f"unknown dataset {text!r}; preparable datasets: {', '.join(data.PREPARABLE)}")
  return text


def build_parser() -> cl.CommandParser:
  parser = cl.CommandParser(prog="unf-data",
                            description="List and prepare the task datasets; list the tasks.")
  commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                   help="one of:")
  data_dir_help = "tfds data directory ($UNF_LOPT_DATA_DIR, else $TFDS_DATA_DIR)"
  default_data_dir = str(data.default_data_dir())

  listing = commands.add_parser(
      "list", help="every dataset and whether it can be loaded now",
      description="Lists every dataset: available (prepared, embedded in the package, or "
                  "prepared on first use from files on this machine) or missing, with the "
                  "command that prepares a missing one.")
  listing.add_argument("--data-dir", type=cl.output_directory, default=default_data_dir,
                       help=data_dir_help)

  prepare = commands.add_parser(
      "prepare", help="prepare a dataset into the tfds layout (array_record files)",
      description="Reads local files and writes them in tfds's layout. --from per dataset: "
                  + "; ".join(f"{name}: {what}" for name, (_, what) in _SOURCES.items())
                  + f". Without --from: fashion_mnist reads {data.DEBIAN_FASHION_MNIST_DIR} "
                  "(Debian's dataset-fashion-mnist), brown_corpus the shipped corpus, and "
                  "cifar10 and lm1b are downloaded by tfds (needs internet).")
  prepare.add_argument("name", type=_preparable_name, metavar="NAME",
                       help=f"the dataset: {', '.join(data.PREPARABLE)}")
  prepare.add_argument("--from", dest="source", type=pathlib.Path, metavar="PATH",
                       help="local files to prepare from (see above; default: the local copy "
                       "where one exists, else tfds's download)")
  prepare.add_argument("--data-dir", type=cl.output_directory, default=default_data_dir,
                       help=data_dir_help)
  # Errors found after parsing (a --from of the wrong kind) then name this subcommand.
  prepare.set_defaults(subparser=prepare)

  commands.add_parser("tasks", help="the registered tasks, with a line on each",
                      description="Lists the task names that unf-meta-train and unf-evaluate "
                                  "accept as --task.")
  return parser


def _check_source(parser: cl.CommandParser, name: str, source: pathlib.Path | None) -> None:
  if source is None:
    return
  wants_directory, what = _SOURCES[name]
  if not source.exists():
    parser.fail("--from", f"{source} does not exist (for {name}: {what})")
  if source.is_dir() != wants_directory:
    kind = "a directory" if source.is_dir() else "a file"
    parser.fail("--from", f"{source} is {kind}; {name} is prepared from {what}")


def _one_line(error: Exception) -> str:
  return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def _list(data_dir: pathlib.Path) -> None:
  width = max(map(len, data.DATASETS))
  for name in data.DATASETS:
    kind = "image" if name in data.IMAGE_DATASETS else "text"
    available, how = data.availability(name, data_dir)
    state = f"available ({how})" if available else \
            f"missing: {data.prepare_command(name, data_dir)}"
    print(f"{name:{width}s}  {kind:5s}  {state}")


def _prepare(parser: cl.CommandParser, args: argparse.Namespace) -> None:
  _check_source(parser, args.name, args.source)
  if importlib.util.find_spec("tensorflow_datasets") is None:
    parser.error(f"preparing {args.name} needs tensorflow-datasets: {extras.install_hint('data')}")
  try:
    path = data.prepare(args.name, args.source, args.data_dir)
  except data.DatasetSourceError as error:
    parser.fail("--from", _one_line(error))
  except data.DatasetNotPreparedError as error:
    parser.error(_one_line(error))
  print(f"prepared {args.name} in {path}")


def main(argv=None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    if args.command == "list":
      _list(args.data_dir)
    elif args.command == "tasks":
      print(cl.format_task_list())
    else:
      _prepare(args.subparser, args)
  except KeyboardInterrupt:
    # tfds writes into a temporary directory and renames it when done, so an
    # interrupted preparation leaves nothing that looks prepared.
    print("unf-data: interrupted; nothing was prepared", file=sys.stderr)
    return 130
  except BrokenPipeError:
    # The reader of the output (e.g. `| head`) went away: not an error of ours.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
