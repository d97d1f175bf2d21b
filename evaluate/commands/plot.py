"""``unf-plot``: training-curve figures from ``unf-evaluate`` outputs and meta-training runs.

  unf-plot eval/mlp                          # eval/mlp/training_curves.{png,pdf}
  unf-plot --compare eval/mlp eval/cnn --out figures/comparison
  unf-plot --meta runs/unf runs/sgdm --out figures/meta_training

See `unf_lopt.evaluate.plots` for what the panels show. Every input file is
read and checked before anything is drawn.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

from unf_lopt import extras
from unf_lopt.evaluate import plots
from unf_lopt.tasks import command_line as cl

EVAL_SMOOTH, META_SMOOTH = 20, 1


def build_parser() -> cl.CommandParser:
  parser = cl.CommandParser(prog="unf-plot", description=__doc__.split("\n")[0])
  parser.add_argument("eval_dir", nargs="?", type=cl.existing_directory,
                      help="an unf-evaluate output directory")
  parser.add_argument("--compare", nargs="+", type=cl.existing_directory, metavar="EVAL_DIR",
                      help="evaluation directories, one panel each")
  parser.add_argument("--meta", nargs="+", type=cl.existing_directory, metavar="RUN_DIR",
                      help="meta-training run directories (meta-loss against outer step)")
  parser.add_argument("--out", type=cl.output_file_stem,
                      help="output path without suffix; .png and .pdf are written (default: "
                      "EVAL_DIR/training_curves, or meta_training for --meta)")
  parser.add_argument("--smooth", type=cl.positive_int, default=None,
                      help=f"moving-average window in steps (default: {EVAL_SMOOTH}; "
                      f"{META_SMOOTH} for --meta)")
  return parser


def main(argv=None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  given = [flag for flag, value in (("EVAL_DIR", args.eval_dir), ("--compare", args.compare),
                                    ("--meta", args.meta)) if value]
  if len(given) != 1:
    parser.error("give one of: an evaluation directory, --compare EVAL_DIRS or --meta RUN_DIRS"
                 + (f" (got {' and '.join(given)})" if given else ""))
  if importlib.util.find_spec("matplotlib") is None:
    parser.error(f"unf-plot needs matplotlib: {extras.install_hint('plot')}")
  flag = given[0]
  dirs = args.meta or args.compare or [args.eval_dir]
  read = plots.read_meta_losses if args.meta else plots.read_curves
  for directory in dirs:  # read everything first: a bad file fails before any drawing
    try:
      read(directory)
    except (FileNotFoundError, ValueError) as error:
      parser.fail(flag, error)
  if args.meta:
    paths = plots.plot_meta_training(dirs, args.out or pathlib.Path("meta_training"),
                                     args.smooth or META_SMOOTH)
  else:
    paths = plots.plot_evaluations(dirs, args.out or dirs[0] / "training_curves",
                                   args.smooth or EVAL_SMOOTH)
  for path in paths:
    print(path)
  return 0


if __name__ == "__main__":
  sys.exit(main())
