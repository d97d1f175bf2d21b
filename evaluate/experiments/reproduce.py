"""Reproduces the UNF paper's learned-optimizer comparison (its Figure 2) task by task.

For one task's protocol (a YAML file under ``protocols/``) it meta-trains every
variant (``sgdm``, ``unf``, ``deepset``, ``nfn`` where the task has it, and UNF
with the authors' spec where it differs from the true symmetry) with PES,
evaluates them from fresh initialisations with Adam as a reference line, and
writes the curves, a table and a figure. Every step is resumable: meta-training
runs resume from their newest checkpoint, and finished evaluations are kept.

  python -m unf_lopt.evaluate.experiments.reproduce --task mlp_fmnist       # CPU scale
  python -m unf_lopt.evaluate.experiments.reproduce --task cnn --scale paper
  python -m unf_lopt.evaluate.experiments.reproduce --figure                # 4-panel figure
  python -m unf_lopt.evaluate.experiments.reproduce --task rnn_lm1b --dry-run
  python -m unf_lopt.evaluate.experiments.reproduce --task cnn --shipped    # no meta-training

Two scales per protocol: ``cpu`` (default) sized for a 2-core CPU (about 10-40
minutes per variant; deviations from the paper are stated in each file), and
``paper``, the paper's settings (Appendix B.2) for GPU/TPU users.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import shlex
import shutil
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from unf_lopt.atomic import write_atomic
from unf_lopt.pretrained import INFO_FILE, SHIPPED
from unf_lopt.evaluate.evaluation import PRETRAINED_PREFIX

PROTOCOL_DIR = pathlib.Path(__file__).parent / "protocols"
PROTOCOLS = ("mlp_fmnist", "cnn", "rnn_lm1b", "transformer_lm1b")
SCALES = ("cpu", "paper")
REFERENCE = "adam"
TRUE_SPEC_GROUP = "true_spec"


@dataclasses.dataclass(frozen=True)
class Variant:
  """One meta-trained optimizer of a protocol."""

  name: str
  update_net: str
  task_options: dict[str, Any]  # the protocol's, updated with the variant's own
  # Variants evaluated together share the task: named by the options a variant adds to the
  # protocol's ("spec_paper"), or TRUE_SPEC_GROUP for none.
  group: str
  # Meta-training settings of this variant only (e.g. the NFN head without a bias), over the
  # protocol's.
  meta_train: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def spec(self) -> str:
    return self.task_options.get("spec", "true")


@dataclasses.dataclass(frozen=True)
class Protocol:
  """A task's reproduction settings at one scale."""

  name: str
  scale: str
  task: str
  task_options: dict[str, Any]
  variants: tuple[Variant, ...]
  meta_train: dict[str, Any]
  evaluation: dict[str, Any]

  @property
  def horizon(self) -> int:
    return int(self.meta_train["horizon"])


def load_protocol(path_or_name: str | pathlib.Path, scale: str = "cpu") -> Protocol:
  """The protocol ``name`` (see `PROTOCOLS`) or the YAML file at a path, at ``scale``.

  Raises:
    ValueError: naming the file, for an unknown scale or a missing section.
  """
  path = pathlib.Path(path_or_name)
  if not path.suffix:
    if str(path_or_name) not in PROTOCOLS:
      raise ValueError(f"unknown protocol {path_or_name!r}; expected one of "
                       f"{', '.join(PROTOCOLS)} or a YAML file")
    path = PROTOCOL_DIR / f"{path_or_name}.yaml"
  try:
    text = yaml.safe_load(path.read_text())
    scales = text["scales"]
    if scale not in scales:
      raise ValueError(f"no scale {scale!r} (it has {', '.join(scales)})")
    settings = scales[scale]
    task = settings.get("task", text["task"])
    task_options = dict(text.get("task_options") or {}, **(settings.get("task_options") or {}))
    variants = []
    for name, values in text["variants"].items():
      own = values.get("task_options") or {}
      group = "_".join(f"{key}_{value}" for key, value in sorted(own.items())) or TRUE_SPEC_GROUP
      variants.append(Variant(name, values["update_net"], dict(task_options, **own), group,
                              dict(values.get("meta_train") or {})))
    variants = tuple(variants)
    return Protocol(path.stem, scale, task, task_options, variants,
                    dict(settings["meta_train"]), dict(settings["evaluation"]))
  except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError, ValueError) as error:
    what = f"missing {error}" if isinstance(error, KeyError) else error
    raise ValueError(f"{path}: not a reproduction protocol ({what})") from None


def meta_train_flags(protocol: Protocol, variant: Variant, out: pathlib.Path) -> list[str]:
  """The ``unf-meta-train`` flags of one variant."""
  flags = ["--task", protocol.task, "--update-net", variant.update_net,
           "--out", str(out / variant.name)]
  if variant.task_options:
    flags += ["--task-options", json.dumps(variant.task_options, sort_keys=True)]
  for key, value in {**protocol.meta_train, **variant.meta_train}.items():
    flag = key.replace("_", "-")
    if isinstance(value, bool):  # unf-meta-train's switches: --name / --no-name
      flags.append(f"--{flag}" if value else f"--no-{flag}")
    else:
      flags += [f"--{flag}", str(value)]
  return flags


def evaluation_groups(protocol: Protocol) -> dict[str, list[Variant]]:
  """Variants by the task they are evaluated on; the true-spec group comes first."""
  groups: dict[str, list[Variant]] = {TRUE_SPEC_GROUP: []}
  for variant in protocol.variants:
    groups.setdefault(variant.group, []).append(variant)
  return {name: members for name, members in groups.items() if members}


def shipped_name(protocol: Protocol, variant: Variant) -> str:
  """The name `ship` gives a variant in the package (``unf_lopt.pretrained(name)``)."""
  return f"{variant.name}_{protocol.task}"


def variant_optimizer(protocol: Protocol, variant: Variant, runs: pathlib.Path | None) -> str:
  """A variant's ``unf-evaluate`` entry: its run directory, or (``runs`` None) its shipped copy."""
  if runs is None:
    return f"{variant.name}={PRETRAINED_PREFIX}{shipped_name(protocol, variant)}"
  return str(runs / variant.name)


def is_available(protocol: Protocol, variant: Variant, runs: pathlib.Path | None) -> bool:
  """Whether the variant's optimizer exists: its run finished, or (``runs`` None) it is shipped."""
  if runs is None:
    return (SHIPPED / shipped_name(protocol, variant) / INFO_FILE).is_file()
  return (runs / variant.name / "optimizer").is_dir()


def group_optimizers(protocol: Protocol, group: Sequence[Variant],
                     runs: pathlib.Path | None) -> list[str]:
  """The ``unf-evaluate`` optimizers of one group: its variants, and Adam in the true-spec group."""
  optimizers = [variant_optimizer(protocol, variant, runs) for variant in group]
  if group[0].group == TRUE_SPEC_GROUP:
    optimizers.append(REFERENCE)
  return optimizers


def evaluate_flags(protocol: Protocol, group: Sequence[Variant], runs: pathlib.Path | None,
                   out: pathlib.Path, threshold: float | None) -> list[str]:
  """The ``unf-evaluate`` flags of one group (``runs`` None: the shipped optimizers)."""
  flags = ["--task", protocol.task, "--optimizers",
           ",".join(group_optimizers(protocol, group, runs)),
           "--steps", str(protocol.evaluation["steps"]),
           "--seeds", str(protocol.evaluation["seeds"]), "--out", str(out)]
  if group[0].task_options:
    flags += ["--task-options", json.dumps(group[0].task_options, sort_keys=True)]
  if threshold is not None:
    flags += ["--threshold", repr(threshold)]
  return flags


def _summary(eval_dir: pathlib.Path) -> dict[str, Any] | None:
  path = eval_dir / "summary.json"
  return json.loads(path.read_text()) if path.exists() else None


def _format_loss(mean: float, se: float) -> str:
  return f"{mean:.4f} ± {se:.4f}" if math.isfinite(se) else f"{mean:.4f}"


def results_table(protocol: Protocol, eval_root: pathlib.Path) -> str:
  """A markdown table of every evaluated optimizer, lowest final training loss first."""
  specs = {variant.name: variant.spec for variant in protocol.variants}
  rows, threshold = [], None
  for group in evaluation_groups(protocol):
    summary = _summary(eval_root / group)
    if summary is None:
      continue
    threshold = summary["threshold"] if threshold is None else threshold
    for row in summary["rows"]:
      rows.append(dict(row, spec=specs.get(row["optimizer"], "-")))
  if not rows:
    return f"(no evaluation of {protocol.name} yet)"
  rows.sort(key=lambda row: row["final_train_loss"])
  lines = [f"{protocol.task} ({protocol.scale} scale), {protocol.evaluation['steps']} steps, "
           f"{rows[0]['seeds']} seeds, mean ± standard error; steps to {threshold:.4f} "
           "(the highest final loss of the true-spec group)", "",
           "| optimizer | spec | final training loss | final test loss | test accuracy | "
           "steps to threshold |", "|---|---|---|---|---|---|"]
  for row in rows:
    steps = "not reached" if row["steps_to_threshold"] is None else (
        f"{row['steps_to_threshold']:.0f} ({row['seeds_reaching_threshold']}/{row['seeds']})")
    diverged = row.get("seeds_diverged", 0)
    note = f" ({diverged} of {row['seeds']} seeds diverged, left out)" if diverged else ""
    lines.append(
        f"| {row['optimizer']} | {row['spec']} | "
        f"{_format_loss(row['final_train_loss'], row['final_train_loss_se'])}{note} | "
        f"{_format_loss(row['final_test_loss'], row['final_test_loss_se'])} | "
        f"{100 * row['final_test_accuracy']:.2f}% | {steps} |")
  return "\n".join(lines)


def shipped_note(protocol: Protocol) -> str:
  """How long each shipped variant was meta-trained (it may differ from the protocol's)."""
  from unf_lopt.pretrained import pretrained_info  # pylint: disable=g-import-not-at-top
  parts = []
  for variant in protocol.variants:
    if is_available(protocol, variant, None):
      steps = pretrained_info(shipped_name(protocol, variant))["meta_training"]["outer_steps"]
      parts.append(f"{variant.name} {steps:,}")
  return (f"The shipped optimizers (`unf_lopt.pretrained(\"<variant>_{protocol.task}\")`), "
          f"meta-trained for these outer steps: {', '.join(parts)} (the protocol: "
          f"{protocol.meta_train['outer_steps']:,}).")


def ship(protocol: Protocol, runs: pathlib.Path, eval_root: pathlib.Path,
         target: pathlib.Path = SHIPPED) -> list[str]:
  """Copies each finished variant into ``target`` as ``<variant>_<task>`` with its info.json."""
  shipped = []
  results = {}
  for group in evaluation_groups(protocol):
    summary = _summary(eval_root / group)
    for row in (summary or {}).get("rows", []):
      results[row["optimizer"]] = row
  for variant in protocol.variants:
    source = runs / variant.name / "optimizer"
    if not source.is_dir():
      print(f"not shipped: {variant.name} has not finished meta-training", file=sys.stderr)
      continue
    name = shipped_name(protocol, variant)
    destination = target / name
    staging = target / f".{name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    config = json.loads((runs / variant.name / "config.json").read_text())
    info = {"task": protocol.task, "task_options": variant.task_options, "spec": variant.spec,
            "num_steps": protocol.horizon, "update_net": variant.update_net,
            "protocol": f"{protocol.name} ({protocol.scale} scale)", "meta_training": config}
    if variant.name in results:
      info["result"] = results[variant.name]
    write_atomic(staging / INFO_FILE, json.dumps(info, indent=2) + "\n")
    shutil.rmtree(destination, ignore_errors=True)
    staging.rename(destination)
    shipped.append(name)
  return shipped


def reproduce(protocol: Protocol, runs: pathlib.Path | None, eval_root: pathlib.Path,
              variants: Sequence[str] | None = None, meta_train_only: bool = False) -> None:
  """Meta-trains, evaluates, tabulates and plots one protocol (resumable).

  With ``runs`` None nothing is meta-trained: the optimizers shipped with the
  package (`ship`) are evaluated under their variants' names.
  """
  # Imported here so that --dry-run and the protocol checks start without compiling anything.
  from unf_lopt.evaluate.commands import evaluate as evaluate_command  # pylint: disable=g-import-not-at-top
  from unf_lopt.evaluate import evaluation, plots  # pylint: disable=g-import-not-at-top
  from unf_lopt.meta_train import cli as meta_cli  # pylint: disable=g-import-not-at-top
  chosen = [v for v in protocol.variants if variants is None or v.name in variants]
  for variant in chosen if runs is not None else ():
    flags = meta_train_flags(protocol, variant, runs)
    print("unf-meta-train", shlex.join(flags), flush=True)
    status = meta_cli.main(flags)
    if status != 0:
      raise SystemExit(f"meta-training {variant.name} failed (exit {status}); rerun to resume")
  if meta_train_only:
    return
  threshold, evaluated = None, False
  for group, members in evaluation_groups(protocol).items():
    members = [v for v in members if is_available(protocol, v, runs)]
    if not members:
      continue
    # A group after a re-evaluated one runs again: its threshold may have changed.
    if not evaluated and evaluation.is_finished(
        eval_root / group, protocol.task, group_optimizers(protocol, members, runs),
        protocol.evaluation["steps"], protocol.evaluation["seeds"], members[0].task_options):
      print(f"{group}: evaluated already, kept", flush=True)
    else:
      flags = evaluate_flags(protocol, members, runs, eval_root / group, threshold)
      print("unf-evaluate", shlex.join(flags), flush=True)
      if evaluate_command.main(flags) != 0:
        raise SystemExit(f"evaluating {group} failed")
      evaluated = True
    if threshold is None:
      threshold = _summary(eval_root / group)["threshold"]
  table = results_table(protocol, eval_root)
  if runs is None:
    table += "\n\n" + shipped_note(protocol)
  write_atomic(eval_root / "results.md", table + "\n")
  print(table)
  panels = [(protocol.task, _curves(protocol, eval_root))]
  for path in plots.plot_curve_panels(panels, eval_root / "curves"):
    print(f"wrote {path}")


def _curves(protocol: Protocol, eval_root: pathlib.Path) -> dict:
  from unf_lopt.evaluate import plots  # pylint: disable=g-import-not-at-top
  curves = {}
  for group in evaluation_groups(protocol):
    if (eval_root / group / "curves.csv").exists():
      curves.update(plots.read_curves(eval_root / group))
  return curves


def write_figure(eval_root: pathlib.Path, scale: str, out: pathlib.Path) -> list[pathlib.Path]:
  """The 4-panel figure (one panel per task evaluated so far) from ``eval_root/<protocol>``."""
  from unf_lopt.evaluate import plots  # pylint: disable=g-import-not-at-top
  panels = []
  for name in PROTOCOLS:
    protocol = load_protocol(name, scale)
    curves = _curves(protocol, eval_root / name)
    if curves:
      panels.append((f"{protocol.task}, {protocol.evaluation['seeds']} seeds", curves))
  if not panels:
    raise SystemExit(f"no evaluations under {eval_root} yet")
  return plots.plot_curve_panels(panels, out, columns=2)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--task", default=None,
                      help=f"protocol: one of {', '.join(PROTOCOLS)}, or a YAML file")
  parser.add_argument("--scale", choices=SCALES, default="cpu",
                      help="cpu: sized for a 2-core CPU; paper: the paper's settings")
  parser.add_argument("--variants", default=None,
                      help="comma-separated subset of the protocol's variants (default: all)")
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/reproduce"),
                      help="meta-training runs go to OUT/<scale>/<protocol>/<variant>")
  parser.add_argument("--eval", type=pathlib.Path, default=pathlib.Path("eval/reproduce"),
                      help="evaluations, tables and figures go to EVAL/<scale>/<protocol>")
  parser.add_argument("--meta-train-only", action="store_true", help="skip the evaluation")
  parser.add_argument("--dry-run", action="store_true", help="print the commands only")
  parser.add_argument("--shipped", action="store_true",
                      help="meta-train nothing: evaluate the optimizers shipped with the package "
                      "(pretrained <variant>_<task>)")
  parser.add_argument("--ship", action="store_true",
                      help="copy the finished optimizers into the package as VARIANT_TASK")
  parser.add_argument("--figure", action="store_true",
                      help="write the 4-panel figure from the evaluations made so far")
  args = parser.parse_args(argv)
  if args.figure:
    for path in write_figure(args.eval / args.scale, args.scale,
                             args.eval / args.scale / "figure2"):
      print(f"wrote {path}")
    return 0
  if args.task is None:
    parser.error("give --task (or --figure)")
  try:
    protocol = load_protocol(args.task, args.scale)
  except ValueError as error:
    parser.error(str(error))
  variants = args.variants.split(",") if args.variants else None
  unknown = set(variants or ()) - {v.name for v in protocol.variants}
  if unknown:
    parser.error(f"--variants: {', '.join(sorted(unknown))} not in {protocol.name}'s "
                 f"({', '.join(v.name for v in protocol.variants)})")
  if args.shipped and args.ship:
    parser.error("--shipped evaluates the package's optimizers; --ship would copy them onto "
                 "themselves")
  runs = None if args.shipped else args.out / args.scale / protocol.name
  eval_root = args.eval / args.scale / protocol.name
  if args.dry_run:
    for variant in protocol.variants if runs is not None else ():
      if variants is None or variant.name in variants:
        print("unf-meta-train", shlex.join(meta_train_flags(protocol, variant, runs)))
    threshold = None
    for group, members in evaluation_groups(protocol).items():
      print("unf-evaluate", shlex.join(evaluate_flags(protocol, members, runs, eval_root / group,
                                                      threshold)))
    return 0
  reproduce(protocol, runs, eval_root, variants, args.meta_train_only)
  if args.ship:
    for name in ship(protocol, runs, eval_root):
      print(f"shipped {SHIPPED / name}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
