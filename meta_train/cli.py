"""``unf-meta-train``: meta-train a learned optimizer with PES.

  unf-meta-train --task mlp_fmnist --update-net unf --out runs/unf_mlp
  unf-meta-train --config run.yaml --outer-steps 200      # flags override the file
  unf-meta-train --task lo:quadratic_family --backend learned_optimization --out runs/lo

Defaults are the paper's settings. Running the same command again on an
existing ``--out`` directory resumes from its newest checkpoint. For several
processes or hosts (TPU pods, Slurm, multi-GPU nodes) pass ``--distributed``,
which reads the cluster from the environment, or name it by hand with
``--coordinator-address HOST:PORT --num-processes N --process-id I`` (see
`meta_train.distributed`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import pathlib
import re
import sys
from typing import NoReturn

from unf_lopt.meta_train import checkpoints, distributed
from unf_lopt.meta_train.backends import make_trainer
from unf_lopt.meta_train.config import (BACKENDS, OPTIONAL_TYPE_SUFFIX, UPDATE_NETS,
                                        MetaTrainConfig)
from unf_lopt.meta_train.outer_loop import NonFiniteMetaParamsError, TrainingInterrupted
from unf_lopt.spec import SpecError
from unf_lopt.tasks import command_line as cl
from unf_lopt.tasks import registry

# Exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130

_HELP = {
    "task": "registered task (see --list-tasks)",
    "task_options": "JSON object of task options, e.g. '{\"spec\": \"paper\"}' (see "
                    "docs/concepts/tasks.md)",
    "update_net": f"one of {', '.join(UPDATE_NETS)}",
    "outer_steps": "outer (meta) steps",
    "num_runs": "parallel inner runs (antithetic pairs)",
    "trunc_length": "inner steps per truncation",
    "horizon": "inner steps per episode (rounded up to a multiple of --trunc-length)",
    "sigma": "perturbation standard deviation",
    "meta_loss": "'mean' training loss over a truncation, or 'final' step",
    "meta_learning_rate": "Adam learning rate on the meta-parameters",
    "schedule": "'constant' or 'cosine' decay of the meta learning rate",
    "clip_norm": "clip meta-gradients by this global norm",
    "hidden": "width of the update network", "depth": "DeepSet layers before the last layer",
    "momentum": "'accumulate' (m <- g m + grad) or 'ema' (m <- g m + (1 - g) grad, the authors' "
                "code) for every momentum, the nominal one included",
    "feature_normalization": "'per_channel' second moments, or 'clip_per_tensor' (the authors' "
                             "code: clip to [-1, 1], one second moment per tensor)",
    "initial_beta": "initial output multiplier beta of the update network (authors' code: 1e-4)",
    "nfn_head_bias": "give the nfn head a bias (Table 3: the MLP row has one, the CNN row not)",
    "identity_share": "unf head: share of the initial output variance given to the identity "
                      "term (the pointwise map a deepset head computes), in (0, 1)",
    "seed": "seed of everything random", "num_devices": "devices to shard runs over (0: all)",
    "checkpoint_every": "outer steps between checkpoints",
    "log_every": "outer steps between log lines",
    "backend": f"one of {', '.join(BACKENDS)}: the PES of this package or learned_optimization's "
               "TruncatedPES (optional extra: make lo-install)",
    "tensorboard": "also write TensorBoard event files next to metrics.jsonl (needs tensorboardX)",
    "max_device_data_mb": "a training split larger than this stays in host memory and each "
                          "process streams its runs' batches (same batches either way)",
}


def _load_config_file(path: pathlib.Path) -> dict:
  """The settings of a JSON or YAML config file; ValueError naming the file if it has none."""
  text = path.read_text()
  if path.suffix in (".yaml", ".yml"):
    import yaml  # pylint: disable=g-import-not-at-top
    try:
      values = yaml.safe_load(text)
    except yaml.YAMLError as error:
      raise ValueError(f"{path} is not valid YAML ({error})") from None
  else:
    try:
      values = json.loads(text)
    except json.JSONDecodeError as error:
      raise ValueError(f"{path} is not valid JSON ({error})") from None
  if not isinstance(values, dict) or not all(isinstance(key, str) for key in values):
    raise ValueError(f"{path} must hold a mapping of settings, e.g. {{\"outer_steps\": 100}}")
  return {key.replace("-", "_"): value for key, value in values.items()}


def _parser() -> cl.CommandParser:
  parser = cl.CommandParser(prog="unf-meta-train", description=__doc__.split("\n")[0])
  parser.add_argument("--config", type=cl.existing_file,
                      help="JSON or YAML file with the same keys as the flags (flags override it)")
  parser.add_argument("--out", required=True, type=cl.output_directory,
                      help="run directory (resumed if it exists)")
  parser.add_argument("--quiet", action="store_true",
                      help="no progress bar and no progress messages, only errors (batch jobs)")
  parser.add_argument("--distributed", action="store_true",
                      help="join a multi-process run whose cluster JAX detects (Slurm, Cloud TPU)")
  parser.add_argument("--coordinator-address", metavar="HOST:PORT",
                      help="multi-process run: address of process 0 (with --num-processes and "
                      "--process-id)")
  parser.add_argument("--num-processes", type=int, metavar="N",
                      help="multi-process run: number of processes")
  parser.add_argument("--process-id", type=int, metavar="I",
                      help="multi-process run: index of this process, 0 to N-1")
  parser.add_argument("--heartbeat-timeout", type=int, metavar="SECONDS",
                      default=distributed.DEFAULT_HEARTBEAT_TIMEOUT_S,
                      help="multi-process run: seconds without news from a process before the "
                      "others stop with an error (default: %(default)s)")
  for field in dataclasses.fields(MetaTrainConfig):
    if field.type == "bool":
      parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name,
                          action=argparse.BooleanOptionalAction, default=None,
                          help=f"{_HELP.get(field.name, '')} (default: {_default(field)})")
      continue
    value_type = field.type.removesuffix(OPTIONAL_TYPE_SUFFIX)
    parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, type=field.type
                        if field.type in (int, float, str) else
                        {"int": int, "float": float, "str": str,
                         "dict": cl.json_object}[value_type],
                        default=None, help=f"{_HELP.get(field.name, '')} (default: "
                        f"{_default(field)})")
  cl.add_list_tasks_flag(parser)
  return parser


# How --help states a default that is no value of the flag's type.
_UNSET_DEFAULTS = {"identity_share": "none, every basis term alike"}


def _default(field: dataclasses.Field) -> object:
  if field.default_factory is not dataclasses.MISSING:
    return field.default_factory()
  if field.default is None:
    return _UNSET_DEFAULTS[field.name]
  return field.default


def _flag(name: str) -> str:
  return f"--{name.replace('_', '-')}"


def _flags_given(args) -> set[str]:
  return {field.name for field in dataclasses.fields(MetaTrainConfig)
          if getattr(args, field.name) is not None}


def _fail_at_source(parser: cl.CommandParser, args, error: Exception) -> NoReturn:
  """Exits 2 naming where the setting that ``error`` names came from: its flag or the file."""
  message = str(error)
  named = [field.name for field in dataclasses.fields(MetaTrainConfig)
           if re.search(rf"\b{field.name}\b", message)]
  if named and named[0] in _flags_given(args):
    parser.fail(_flag(named[0]), message)
  if named and args.config:
    parser.fail("--config", f"{args.config}: {message}")
  if str(args.out) in message:
    parser.fail("--out", message)
  parser.error(message)


def _config(parser: cl.CommandParser, args) -> MetaTrainConfig:
  """``--config`` and the flags (flags win) as a checked config; else exits 2 naming the source."""
  try:
    values = _load_config_file(args.config) if args.config else {}
  except (OSError, ValueError) as error:
    parser.fail("--config", error)
  values.update({name: getattr(args, name) for name in _flags_given(args)})
  try:
    return MetaTrainConfig.from_dict(values)
  except (TypeError, ValueError) as error:
    if "configuration keys" in str(error):  # unknown keys can only come from the file
      parser.fail("--config", f"{args.config}: {error}")
    _fail_at_source(parser, args, error)


@contextlib.contextmanager
def _progress_messages_on_stderr(quiet: bool):
  """Shows the package's log messages on stderr while training (warnings only with --quiet)."""
  package_logger = logging.getLogger("unf_lopt")
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter("unf-meta-train: %(message)s"))
  level = package_logger.level
  package_logger.addHandler(handler)
  package_logger.setLevel(logging.WARNING if quiet else logging.INFO)
  try:
    yield
  finally:
    package_logger.removeHandler(handler)
    package_logger.setLevel(level)


def main(argv=None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  with _progress_messages_on_stderr(args.quiet):
    try:
      return _train(parser, args)
    except KeyboardInterrupt:  # before training started: nothing was written yet
      print("unf-meta-train: interrupted before training started; nothing was saved",
            file=sys.stderr)
      return EXIT_INTERRUPTED


def _train(parser: cl.CommandParser, args) -> int:
  config = _config(parser, args)
  by_hand = (args.coordinator_address, args.num_processes, args.process_id)
  if args.distributed or any(value is not None for value in by_hand):
    try:
      distributed.initialize(*by_hand, heartbeat_timeout_s=args.heartbeat_timeout)
    except ValueError as error:
      parser.fail("--coordinator-address" if args.coordinator_address is None else
                  "--num-processes" if args.num_processes is None else "--process-id", error)
  task_flag, where = "--task", ""
  if "task" not in _flags_given(args) and args.config:
    task_flag, where = "--config", f"{args.config}: "
  if config.task_options and not config.task.startswith("lo:"):
    # Names the flag (or file) of an option the task does not take, before any compute.
    from_file = "task_options" not in _flags_given(args)
    options_flag = "--config" if from_file else "--task-options"
    problem = (cl.task_option_error(config.task, config.task_options)
               if config.task in registry.registered_tasks() else None)
    if problem:
      parser.fail(options_flag, f"{args.config}: {problem}" if from_file else problem)
    cl.build_task(parser, config.task, config.task_options, task_flag=task_flag,
                  options_flag=options_flag)
  # The trainer checks the task, the spec, the data and the run directory before any compute.
  try:
    trainer = make_trainer(config, args.out, quiet=args.quiet)
  except KeyError as error:
    parser.fail(task_flag, f"{where}{error.args[0] if error.args else error} (see --list-tasks)")
  except FileNotFoundError as error:  # the task's data is not prepared
    parser.fail(task_flag, f"{where}{error}")
  except ImportError as error:
    parser.fail("--task" if config.task.startswith("lo:") else "--backend", error)
  except SpecError as error:
    parser.fail("--update-net", error)
  except ValueError as error:  # e.g. --num-devices, or --out holding a run of another config
    _fail_at_source(parser, args, error)
  try:
    trainer.run()
  except TrainingInterrupted as interrupted:
    print(f"unf-meta-train: {interrupted}", file=sys.stderr)
    return EXIT_INTERRUPTED
  except checkpoints.TrainingCheckpointError as error:  # names the damaged file
    print(f"unf-meta-train: {error}", file=sys.stderr)
    return 2
  except NonFiniteMetaParamsError as error:
    print(f"unf-meta-train: {error}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
