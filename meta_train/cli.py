"""``unf-meta-train``: meta-train a learned optimizer with PES.

  unf-meta-train --task mlp_fmnist --update-net unf --out runs/unf_mlp
  unf-meta-train --config run.yaml --outer-steps 200      # flags override the file
  unf-meta-train --task lo:quadratic_family --backend learned_optimization --out runs/lo

Defaults are the paper's settings. Running the same command again on an
existing ``--out`` directory resumes from its newest checkpoint. For several
hosts (TPU pods, Slurm, multi-GPU nodes) pass ``--distributed``: it calls
``jax.distributed.initialize()`` first, whose arguments JAX reads from the
cluster's environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys

from unf_lopt.meta_train.trainer import BACKENDS, UPDATE_NETS, MetaTrainConfig, make_trainer

_HELP = {
    "task": "registered task (see tasks.registered_tasks())",
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
    "seed": "seed of everything random", "num_devices": "devices to shard runs over (0: all)",
    "checkpoint_every": "outer steps between checkpoints", "log_every": "outer steps between log lines",
    "backend": f"one of {', '.join(BACKENDS)}: the PES of this package or learned_optimization's "
               "TruncatedPES (optional extra: make lo-install)",
}


def _load_config_file(path: str) -> dict:
  text = pathlib.Path(path).read_text()
  if path.endswith((".yaml", ".yml")):
    import yaml  # pylint: disable=g-import-not-at-top
    values = yaml.safe_load(text)
  else:
    values = json.loads(text)
  if not isinstance(values, dict):
    raise ValueError(f"{path} must hold a mapping of settings")
  return {key.replace("-", "_"): value for key, value in values.items()}


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="unf-meta-train", description=__doc__.split("\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--config", help="JSON or YAML file with the same keys as the flags")
  parser.add_argument("--out", required=True, help="run directory (resumed if it exists)")
  parser.add_argument("--quiet", action="store_true", help="no progress bar (batch jobs)")
  parser.add_argument("--distributed", action="store_true",
                      help="call jax.distributed.initialize() (multi-host)")
  for field in dataclasses.fields(MetaTrainConfig):
    parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, type=field.type
                        if field.type in (int, float, str) else
                        {"int": int, "float": float, "str": str}[field.type],
                        default=None, help=f"{_HELP.get(field.name, '')} (default: "
                        f"{field.default})")
  return parser


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  if args.distributed:
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize()
  try:
    values = _load_config_file(args.config) if args.config else {}
    values.update({field.name: getattr(args, field.name)
                   for field in dataclasses.fields(MetaTrainConfig)
                   if getattr(args, field.name) is not None})
    config = MetaTrainConfig.from_dict(values)
    trainer = make_trainer(config, args.out, quiet=args.quiet)
  except (ValueError, KeyError, FileNotFoundError, ImportError) as error:
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    print(f"unf-meta-train: {message}", file=sys.stderr)
    return 2
  trainer.run()
  return 0


if __name__ == "__main__":
  sys.exit(main())
