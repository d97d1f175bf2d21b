"""Ablation of the authors' optimizer details on ``mlp_fmnist``, at equal meta-training budget.

Where the authors' released code differs from our reading of the UNF paper
(Zhou et al. 2024; ``research/univ_nfn`` in learned_optimization), each
difference is one `unf_lopt.NominalLOpt` option. This script meta-trains, with
the same settings and seed, the UNF optimizer in four variants (ours, then
each option switched on alone) and SGDM in the two variants the options reach
(the feature normalisation and beta belong to the update network):

* ``unf``: ours (accumulators, per-channel features, beta 1e-3);
* ``unf_ema``: ``--momentum ema``;
* ``unf_clip``: ``--feature-normalization clip_per_tensor``;
* ``unf_beta1e-4``: ``--initial-beta 1e-4``;
* ``sgdm``: ours;
* ``sgdm_ema``: ``--momentum ema``;

then evaluates every trained optimizer, and the same optimizer before
meta-training (its initial meta-parameters, written to ``OUT/init/NAME_init``),
with `unf_lopt.evaluate.evaluation` over ``--seeds`` fresh initialisations (the
same for all) for ``--eval-steps`` steps, and writes ``ablation.md``: the final
training loss (mean of the last 50 steps) as mean +- standard error over
seeds, its difference from the ``ours`` run of the same update net with the
paired standard error (same seeds, so init and batch noise cancel), the final
training loss before meta-training, the test accuracy, and the learned alpha,
beta and g0.

Resumable: each run is an ``unf-meta-train`` run directory ``OUT/NAME`` (a
killed run continues from its newest checkpoint; a finished one is skipped),
and the evaluation is skipped when ``OUT/eval/summary.json`` holds the same
comparison.

Usage (the defaults, measured in docs/ablation.md: 22 minutes on a shared 2-core CPU):
  python -m unf_lopt.evaluate.experiments.ablation --out runs/ablation \\
      [--outer-steps 150] [--horizon 1000] [--seeds 5] [--only unf,unf_ema]
"""

from __future__ import annotations

import argparse
import json
import pathlib
from collections.abc import Sequence

import jax

import unf_lopt as U
from unf_lopt import tasks as tasks_lib
from unf_lopt.checkpoint import load_checkpoint, read_metadata
from unf_lopt.evaluate import evaluation, plots
from unf_lopt.meta_train import cli as meta_cli
from unf_lopt.meta_train.config import RunKeys
from unf_lopt.meta_train.outer_loop import scalars

TASK = "mlp_fmnist"
FINAL_WINDOW = 50  # steps averaged into the final training loss (evaluation's default)
INIT_DIR = "init"
# name -> (update net, the NominalLOpt options that make the variant).
VARIANTS = {
    "unf": ("unf", {}),
    "unf_ema": ("unf", {"momentum": "ema"}),
    "unf_clip": ("unf", {"feature_normalization": "clip_per_tensor"}),
    "unf_beta1e-4": ("unf", {"initial_beta": 1e-4}),
    "sgdm": ("sgdm", {}),
    "sgdm_ema": ("sgdm", {"momentum": "ema"}),
}
DESCRIPTIONS = {"unf": "ours", "unf_ema": "+ EMA momenta", "unf_clip": "+ clip, per-tensor norm",
                "unf_beta1e-4": "+ initial beta 1e-4", "sgdm": "ours", "sgdm_ema": "+ EMA momenta"}


def meta_train_flags(name: str, out: pathlib.Path, args: argparse.Namespace) -> list[str]:
  """The ``unf-meta-train`` arguments of run ``name``: shared settings plus its options."""
  update_net, options = VARIANTS[name]
  option_flags = [word for key, value in options.items()
                  for word in (f"--{key.replace('_', '-')}", str(value))]
  return ["--task", TASK, "--update-net", update_net, *option_flags,
          "--outer-steps", str(args.outer_steps), "--num-runs", str(args.num_runs),
          "--trunc-length", str(args.trunc_length), "--horizon", str(args.horizon),
          "--sigma", "0.01", "--meta-learning-rate", str(args.meta_learning_rate),
          "--seed", str(args.seed), "--checkpoint-every", str(args.checkpoint_every),
          "--log-every", "10", "--quiet", "--out", str(out / name)]


def save_initial_optimizer(name: str, out: pathlib.Path, seed: int) -> pathlib.Path:
  """Writes run ``name``'s meta-parameters before meta-training (as unf-meta-train starts them)."""
  path = out / INIT_DIR / f"{name}_init"
  if not (path / "optimizer.json").is_file():
    update_net, options = VARIANTS[name]
    task = tasks_lib.get_task(TASK)
    lopt = U.NominalLOpt(update_net, spec=task.spec,
                         params_like=jax.eval_shape(task.init, jax.random.PRNGKey(0)), **options)
    U.save_checkpoint(path, lopt, lopt.init(RunKeys(seed).meta_init),
                      metadata={"task": TASK, "outer_steps": 0})
  return path


def is_finished(run: pathlib.Path, outer_steps: int) -> bool:
  optimizer = run / "optimizer"
  return ((optimizer / "optimizer.json").is_file()
          and read_metadata(optimizer).get("outer_steps") == outer_steps)


def markdown_table(names: Sequence[str], out: pathlib.Path, eval_dir: pathlib.Path) -> str:
  """The ablation table of the evaluated runs ``names``."""
  summary = {row["optimizer"]: row
             for row in json.loads((eval_dir / "summary.json").read_text())["rows"]}
  finals = {name: losses[:, -FINAL_WINDOW:].mean(axis=1)
            for name, losses in plots.read_curves(eval_dir).items()}
  lines = ["| update net | variant | final training loss | vs ours (paired) | before meta-training "
           "| test accuracy | alpha | beta | g0 |", "|---|---|---|---|---|---|---|---|---|"]
  for name in names:
    update_net = VARIANTS[name][0]
    row = summary[name]
    baseline = update_net  # the "ours" run of the same update net
    if name == baseline or baseline not in finals:
      versus = ""
    else:
      # Paired over seeds: the same inits and batches, so their noise cancels.
      mean, se = evaluation.mean_and_standard_error(finals[name] - finals[baseline])
      versus = f"{mean:+.4f} ± {se:.4f}"
    initial = summary.get(f"{name}_init")
    before = (f"{initial['final_train_loss']:.4f} ± {initial['final_train_loss_se']:.4f}"
              if initial else "")
    _, meta = load_checkpoint(out / name / "optimizer")
    learned = scalars(meta)
    beta = f"{learned['beta']:.2e}" if "beta" in learned else "0"
    lines.append(
        f"| {update_net.upper() if update_net == 'unf' else 'SGDM'} | {DESCRIPTIONS[name]} | "
        f"{row['final_train_loss']:.4f} ± {row['final_train_loss_se']:.4f} | {versus} | "
        f"{before} | "
        f"{100 * row['final_test_accuracy']:.2f} ± {100 * row['final_test_accuracy_se']:.2f}% | "
        f"{learned['alpha']:.4f} | {beta} | {learned['g0']:.4f} |")
  return "\n".join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/ablation"))
  parser.add_argument("--only", default=",".join(VARIANTS),
                      help=f"comma-separated runs, of {', '.join(VARIANTS)} (default: all)")
  parser.add_argument("--outer-steps", type=int, default=150)
  parser.add_argument("--num-runs", type=int, default=16)
  parser.add_argument("--trunc-length", type=int, default=50)
  parser.add_argument("--horizon", type=int, default=1000)
  parser.add_argument("--meta-learning-rate", type=float, default=3e-3)
  parser.add_argument("--seed", type=int, default=0, help="meta-training seed (all runs)")
  parser.add_argument("--checkpoint-every", type=int, default=50)
  parser.add_argument("--seeds", type=int, default=5, help="evaluation seeds")
  parser.add_argument("--eval-steps", type=int, default=None,
                      help="evaluation steps (default: --horizon)")
  args = parser.parse_args(argv)
  names = [name for name in args.only.split(",") if name]
  unknown = sorted(set(names) - set(VARIANTS))
  if unknown:
    parser.error(f"--only: unknown runs {unknown}; known: {', '.join(VARIANTS)}")
  eval_steps = args.eval_steps or args.horizon
  for name in names:
    if is_finished(args.out / name, args.outer_steps):
      print(f"{name}: finished, skipped", flush=True)
      continue
    flags = meta_train_flags(name, args.out, args)
    print("unf-meta-train", " ".join(flags), flush=True)
    status = meta_cli.main(flags)
    if status != 0:
      raise SystemExit(f"{name}: unf-meta-train exited with status {status}")
  eval_dir = args.out / "eval"
  runs = [str(args.out / name) for name in names]
  runs += [str(save_initial_optimizer(name, args.out, args.seed)) for name in names]
  if evaluation.is_finished(eval_dir, TASK, runs, eval_steps, args.seeds):
    print("evaluation: finished, skipped", flush=True)
  else:
    print(f"evaluating {len(runs)} optimizers, {args.seeds} seeds x {eval_steps} steps", flush=True)
    evaluation.evaluate_optimizers(TASK, runs, steps=eval_steps, seeds=args.seeds, out=eval_dir,
                                   final_window=FINAL_WINDOW, quiet=True)
  table = markdown_table(names, args.out, eval_dir)
  (args.out / "ablation.md").write_text(table + "\n")
  print(table)


if __name__ == "__main__":
  main()
