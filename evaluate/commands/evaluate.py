"""``unf-evaluate``: train a task from fresh inits with several optimizers and compare them.

  unf-evaluate --task mlp_fmnist --optimizers runs/unf,runs/sgdm,adam --steps 2000 \\
      --seeds 5 --out eval/mlp
  unf-evaluate --list-tasks

See `unf_lopt.evaluate.evaluation` for the optimizer names and the files
written to ``--out``. Every flag, the task and every optimizer are checked
before any training.
"""

from __future__ import annotations

import json
import sys

from unf_lopt.evaluate import evaluation
from unf_lopt.tasks import command_line as cl


def build_parser() -> cl.CommandParser:
  parser = cl.CommandParser(prog="unf-evaluate", description=__doc__.split("\n")[0])
  parser.add_argument("--task", required=True, help="registered task (see --list-tasks)")
  parser.add_argument("--task-options", type=cl.json_object, default="{}",
                      help='JSON object of task options, e.g. \'{"image_size": 16}\'')
  parser.add_argument("--optimizers", required=True,
                      help="comma-separated: run dirs, checkpoint dirs, pretrained:NAME, adam, "
                      "lo:NAME[@FILE] (learned_optimization's, e.g. lo:mlp_lopt); LABEL=ENTRY "
                      "names its curves LABEL (default: the directory's or the pretrained name); "
                      "nominal:ENTRY is ENTRY's nominal SGDM term alone (its learned term off)")
  parser.add_argument("--steps", type=cl.positive_int, default=2000,
                      help="inner training steps per run")
  parser.add_argument("--seeds", type=cl.positive_int, default=5,
                      help="runs per optimizer (seeds 0 .. N-1: inits and batch order)")
  parser.add_argument("--eval-every", type=cl.positive_int, default=100,
                      help="steps between test-split evaluations")
  parser.add_argument("--final-window", type=cl.positive_int, default=50,
                      help="trailing steps averaged into the final training loss")
  parser.add_argument("--threshold", type=cl.finite_float, default=None,
                      help="training loss to reach for steps-to-threshold (default: the "
                      "highest final training loss among the optimizers)")
  parser.add_argument("--out", required=True, type=cl.output_directory,
                      help="output directory (created; files in it are replaced)")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  cl.add_list_tasks_flag(parser)
  return parser


def main(argv=None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.final_window > args.steps:
    parser.fail("--final-window", f"{args.final_window} exceeds --steps ({args.steps})")
  task = cl.build_task(parser, args.task, args.task_options)
  names = args.optimizers.split(",")
  try:
    evaluation.load_optimizers(names, task)
  except (evaluation.OptimizerSpecError, ImportError) as error:
    parser.fail("--optimizers", error)
  try:
    rows = evaluation.evaluate_optimizers(args.task, names, args.steps, args.seeds, args.out,
                                          args.eval_every, args.final_window, args.threshold,
                                          args.task_options, args.quiet)
  except FileNotFoundError as error:  # the task's data is not prepared: before any training
    parser.fail("--task", error)
  summary = json.loads((args.out / "summary.json").read_text())
  print(evaluation.format_summary(rows, summary["threshold"], args.final_window))
  return 0


if __name__ == "__main__":
  sys.exit(main())
