"""``unf-predict-generalization``: predict zoo models' test success from their weights.

  unf-predict-generalization --zoo zoo/small/zoo.npz --predictor unf --seeds 3 --out eval/zoo_unf

See `unf_lopt.evaluate.experiments.predict_generalization`. The zoo and every
flag are checked before any training.
"""

from __future__ import annotations

import json
import sys
import zipfile

import numpy as np

from unf_lopt.evaluate.experiments import predict_generalization as experiment
from unf_lopt.tasks import command_line as cl
from unf_lopt.tasks.zoo import generate

ZOO_ARRAYS = ("success_rate", "split")


def build_parser() -> cl.CommandParser:
  parser = cl.CommandParser(prog="unf-predict-generalization",
                            description=__doc__.split("\n")[0])
  parser.add_argument("--zoo", required=True, type=cl.existing_file,
                      help="zoo.npz of unf-make-zoo")
  parser.add_argument("--predictor", required=True, choices=experiment.PREDICTORS,
                      help="the weight-space model that predicts success")
  parser.add_argument("--seeds", type=cl.positive_int, default=3, help="trainings, one per seed")
  parser.add_argument("--first-seed", type=cl.non_negative_int, default=0,
                      help="seeds are first-seed .. first-seed + seeds - 1 (to extend a study)")
  cl.add_fit_flags(parser, batch_size=10, batch_unit="zoo models")
  cl.add_equivariant_layer_flags(parser, layers="unf, deepset")
  parser.add_argument("--mlp-width", type=cl.positive_int, default=None,
                      help="width of the predictor's MLP (default: 600 for statnn, 512 "
                      "otherwise, the paper's)")
  parser.add_argument("--out", type=cl.output_directory,
                      help="directory to write result.json to (default: print only)")
  return parser


def load_checked_zoo(parser: cl.CommandParser, path, batch_size: int) -> dict:
  """The zoo at ``path`` (``--zoo``), checked to hold what training needs; else exits 2."""
  try:
    zoo = generate.load_zoo(path)
  except (OSError, ValueError, zipfile.BadZipFile) as error:
    parser.fail("--zoo", f"{path} is not a zoo.npz of unf-make-zoo ({error})")
  missing = [name for name in ZOO_ARRAYS if name not in zoo]
  if missing or not zoo["params"]:
    parser.fail("--zoo", f"{path} is not a zoo.npz of unf-make-zoo (missing "
                f"{', '.join(missing) or 'params'})")
  sizes = np.bincount(np.asarray(zoo["split"], np.int64), minlength=3)[:3]
  if min(sizes) == 0:
    parser.fail("--zoo", f"{path} needs train, valid and test models; its split has "
                f"{sizes.tolist()}")
  if batch_size > sizes[0]:
    parser.fail("--batch-size", f"{batch_size} exceeds the {sizes[0]} training models of {path}")
  return zoo


def main(argv=None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  zoo = load_checked_zoo(parser, args.zoo, args.batch_size)
  result = experiment.predict_generalization(
      zoo, args.predictor, range(args.first_seed, args.first_seed + args.seeds),
      epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
      channels=args.channels, mlp_width=args.mlp_width, identity_share=args.identity_share,
      report=lambda line: print(line, file=sys.stderr))
  print(f"{args.predictor}: Kendall tau {result['mean']:.4f} +- {result['standard_error']:.4f} "
        f"over {len(result['taus'])} seeds ({int((zoo['split'] == 2).sum())} test models)")
  if args.out:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(
        {"predictor": args.predictor, "zoo": str(args.zoo), "identity_share": args.identity_share,
         **result}, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
