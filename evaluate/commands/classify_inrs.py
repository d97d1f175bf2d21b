"""``unf-classify-inrs``: classify images from the weights of their INRs (DWSNets' experiment).

  unf-make-inrs --out inrs/fmnist
  unf-classify-inrs --inrs inrs/fmnist/inrs.npz --classifier unf nfn deepset mlp mlp_augment

See `unf_lopt.evaluate.experiments.inr_classification`. The dataset and every
flag are checked before any training.
"""

from __future__ import annotations

import json
import sys
import zipfile

import numpy as np

from unf_lopt.evaluate.experiments import inr_classification as experiment
from unf_lopt.tasks import command_line as cl
from unf_lopt.tasks import inr, xla_cpu


def build_parser() -> cl.CommandParser:
  parser = cl.CommandParser(prog="unf-classify-inrs", description=__doc__.split("\n")[0])
  parser.add_argument("--inrs", required=True, type=cl.existing_file,
                      help="inrs.npz of unf-make-inrs")
  parser.add_argument("--classifier", nargs="+", default=list(experiment.CLASSIFIERS),
                      choices=experiment.CLASSIFIERS, help="classifiers to train, in turn")
  parser.add_argument("--seeds", type=cl.positive_int, default=3,
                      help="trainings per classifier, seeds 0 .. N-1")
  cl.add_fit_flags(parser, batch_size=32, batch_unit="INRs")
  cl.add_equivariant_layer_flags(parser, layers="unf, nfn, deepset")
  parser.add_argument("--mlp-width", type=cl.positive_int, default=256,
                      help="width of the classifiers' MLP head (twice this for mlp)")
  parser.add_argument("--out", type=cl.output_directory,
                      help="directory to write results.json to (default: print only)")
  return parser


def main(argv=None) -> int:
  xla_cpu.avoid_thread_pool_hang()
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    dataset = inr.load_inrs(args.inrs)
  except (OSError, ValueError, zipfile.BadZipFile) as error:
    parser.fail("--inrs", error)
  sizes = np.bincount(np.asarray(dataset["split"], np.int64), minlength=3)[:3].tolist()
  if min(sizes) == 0:
    parser.fail("--inrs", f"{args.inrs} needs train, valid and test INRs; its split has {sizes}")
  if args.batch_size > sizes[0]:
    parser.fail("--batch-size", f"{args.batch_size} exceeds the {sizes[0]} training INRs of "
                f"{args.inrs}")
  print(f"{args.inrs}: {sizes[0]} train / {sizes[1]} valid / {sizes[2]} test INRs, "
        f"PSNR {dataset['psnr'].mean():.1f} dB", file=sys.stderr)
  results = experiment.classify_inrs(
      dataset, args.classifier, args.seeds, report=lambda line: print(line, file=sys.stderr),
      epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
      channels=args.channels, mlp_width=args.mlp_width, identity_share=args.identity_share)
  print("| classifier | test accuracy (%) |\n|---|---|")
  for kind, result in results.items():
    print(f"| {kind} | {100 * result['mean']:.2f} +- {100 * result['standard_error']:.2f} |")
  if args.out:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(
        {"inrs": str(args.inrs), "split_sizes": sizes, "seeds": args.seeds,
         "identity_share": args.identity_share, "epochs": args.epochs, "results": results},
        indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
