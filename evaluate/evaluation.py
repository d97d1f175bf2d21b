"""Comparing optimizers: train a task from fresh inits with each, and summarise the curves.

`evaluate_optimizers` is what the ``unf-evaluate`` command
(`unf_lopt.evaluate.commands.evaluate`) runs. An optimizer is named by a
meta-training run directory (its ``optimizer/``), an optimizer checkpoint
directory, ``pretrained:NAME`` (shipped with the package), ``adam`` (optax
Adam, learning rate 1e-3, not tuned) or ``lo:NAME[@FILE]``, a
learned_optimization learned optimizer such as ``lo:mlp_lopt`` (optional
extra; meta-parameters from its ``init`` with seed 0, or from FILE, see
`unf_lopt.integrations.learned_optimization`). ``LABEL=SOURCE`` names an
entry's curves LABEL instead (``unf=pretrained:unf_mlp_fmnist``; by default a
run is labelled with its directory's name). ``nominal:ENTRY`` is ENTRY's
nominal term alone (`nominal_term`: the learned term off, labelled
``<label>_nominal``). Learned optimizers are rebuilt
on the evaluated task's weight space, so an optimizer meta-trained on one MLP
runs on an MLP of other widths.

Every optimizer trains the same seeds (same inits and batch order). Outputs in
``out``: ``config.json``; ``curves.csv`` (optimizer, seed, step,
train_loss; every step); ``test.csv`` (optimizer, seed, step, test_loss,
test_accuracy; every ``eval_every`` steps, over the whole test split);
``summary.csv`` and ``summary.json``: per optimizer, the final training loss
(mean of the last ``final_window`` steps) and final test metrics as mean and
standard error over the seeds that did not diverge (a non-finite loss; their
number is ``seeds_diverged``), and the steps until the training loss (moving
average over ``final_window``) first reaches ``threshold`` (default: the
highest final training loss among the optimizers), averaged over the seeds
that reach it, with their number.
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from unf_lopt import tasks as tasks_lib
import unf_lopt as U
from unf_lopt import spec_matching
from unf_lopt.atomic import atomic_open
from unf_lopt.meta_train.inner import InnerProblem
from unf_lopt.checkpoint import CONFIG_FILE

ADAM = "adam"
PRETRAINED_PREFIX = "pretrained:"
NOMINAL_PREFIX = "nominal:"
LO_PREFIX = "lo:"


class OptimizerSpecError(ValueError):
  """An ``--optimizers`` entry that cannot be loaded or does not fit the task."""


# ``LABEL=SOURCE``: a curve label chosen by the user (a word, then "=").
_LABELLED = re.compile(r"^([A-Za-z0-9_.+-]+)=(.+)$")


def split_label(name: str) -> tuple[str | None, str]:
  """``(label, source)`` of an ``--optimizers`` entry; label None when it has none.

  >>> split_label("unf=pretrained:unf_mlp_fmnist")
  ('unf', 'pretrained:unf_mlp_fmnist')
  >>> split_label("runs/unf")
  (None, 'runs/unf')
  """
  match = _LABELLED.match(name)
  if match is None or pathlib.Path(name).exists():  # a directory whose name holds "="
    return None, name
  return match.group(1), match.group(2)


def optimizer_label(name: str) -> str:
  """The curve label of an ``--optimizers`` entry: its own ``LABEL=``, else from its source."""
  label, name = split_label(name)
  if label is not None:
    return label
  if name.startswith(NOMINAL_PREFIX):
    return f"{optimizer_label(name[len(NOMINAL_PREFIX):])}_nominal"
  if name.startswith(PRETRAINED_PREFIX):
    return name[len(PRETRAINED_PREFIX):]
  if name == ADAM:
    return ADAM
  if name.startswith(LO_PREFIX):
    optimizer, _, path = name.partition("@")
    return f"{optimizer}@{pathlib.Path(path).name}" if path else optimizer
  return pathlib.Path(name).resolve().name


def load_optimizer(name: str, task: tasks_lib.Task):
  """``(lopt, meta_params)`` for an ``--optimizers`` entry, fitted to ``task``."""
  _, name = split_label(name)
  if name.startswith(NOMINAL_PREFIX):
    return nominal_term(*load_optimizer(name[len(NOMINAL_PREFIX):], task), name)
  if name == ADAM:
    return U.NominalLOpt("adam"), {}
  if name.startswith(LO_PREFIX):
    # Imported here: the core must run without learned_optimization.
    from unf_lopt.integrations import learned_optimization  # pylint: disable=g-import-not-at-top
    try:
      return learned_optimization.lo_learned_optimizer(name[len(LO_PREFIX):])
    except (KeyError, ValueError) as error:
      message = error.args[0] if isinstance(error, KeyError) and error.args else error
      raise OptimizerSpecError(f"{name}: {message}") from error
  try:
    if name.startswith(PRETRAINED_PREFIX):
      lopt, meta = U.pretrained(name[len(PRETRAINED_PREFIX):])
    else:
      path = pathlib.Path(name)
      if (path / "optimizer").is_dir():
        path = path / "optimizer"
      elif (path / "checkpoints").is_dir() and not (path / CONFIG_FILE).exists():
        raise OptimizerSpecError(
            f"{name} is a meta-training run that has not finished (no optimizer/ yet); "
            "finish it or pass one of its checkpoints/step_N/optimizer directories")
      lopt, meta = U.load_checkpoint(path)
  except (U.CheckpointError, KeyError) as error:
    raise OptimizerSpecError(f"{name}: {error}") from error
  if lopt.update_net in ("unf", "nfn", "deepset"):
    params_like = jax.eval_shape(task.init, jax.random.PRNGKey(0))
    trained_spec = lopt.spec if lopt.update_net != "deepset" else None
    if isinstance(trained_spec, dict):
      task_spec = task.spec(params_like) if callable(task.spec) else task.spec
      try:
        match = spec_matching.match_spec(trained_spec, params_like, spec=task_spec)
        if not match.is_identity:
          # Trained on another model of this structure (other tensor names): the optimizer
          # re-keys the task's weights into its trained structure on every step.
          lopt.opt_fn(meta).fit(params_like)  # checks the meta-parameters' shapes now
          return lopt, meta
      except U.SpecError as error:
        raise OptimizerSpecError(f"{name}: {error}") from error
    lopt = U.NominalLOpt(lopt.update_net, spec=task.spec, params_like=params_like,
                         **lopt.options())
    expected = jax.tree.map(jnp.shape, jax.eval_shape(lopt.init, jax.random.PRNGKey(0)))
    if expected != jax.tree.map(jnp.shape, meta):
      raise OptimizerSpecError(
          f"{name}: this {lopt.update_net} optimizer was trained on a weight space of another "
          f"structure than {task.name}'s; a UNF/NFN optimizer applies to networks with the same "
          "layers (any widths)")
  return lopt, meta


def nominal_term(lopt, meta, name: str = "the optimizer"):
  """``(lopt, meta_params)`` of a learned optimizer's nominal term alone.

  The learned term switched off (``beta = 0``) leaves
  ``W <- W - alpha * m_g0``: SGDM with the learned ``alpha`` and ``g0`` and
  the same momentum rule. Comparing a learned optimizer with its nominal term
  separates what its update network contributes from the step size and
  momentum its meta-training settled on.

  Raises:
    OptimizerSpecError: ``lopt`` has no nominal term (Adam, learned_optimization's).
  """
  if not isinstance(lopt, U.NominalLOpt) or "log_alpha" not in meta:
    raise OptimizerSpecError(f"{name}: only unf-lopt's learned optimizers (unf, nfn, deepset, "
                             "sgdm) have a nominal term")
  return (U.NominalLOpt("sgdm", momentum=lopt.momentum),
          {"log_alpha": meta["log_alpha"], "logit_g0": meta["logit_g0"]})


def load_optimizers(names: Sequence[str], task: tasks_lib.Task) -> dict[str, tuple[Any, Any]]:
  """``{label: (lopt, meta_params)}`` of ``--optimizers`` entries, each fitted to ``task``.

  Raises:
    OptimizerSpecError: an entry that cannot be loaded or does not fit, or two
      entries with one label.
  """
  loaded = {}
  for name in names:
    if not name:
      raise OptimizerSpecError("an empty optimizer name (a stray comma?)")
    label = optimizer_label(name)
    if label in loaded:
      raise OptimizerSpecError(f"two optimizers are called {label!r}; rename a run directory")
    loaded[label] = load_optimizer(name, task)
  return loaded


def _test_metrics_fn(task: tasks_lib.Task, chunk: int):
  """Jitted ``params -> (loss, accuracy)`` over the whole test split."""
  arrays = task.data_arrays("test")
  size = len(next(iter(arrays.values())))
  chunk = min(chunk, size)
  num_chunks = size // chunk
  stacked = {k: jnp.asarray(v[:num_chunks * chunk].reshape(num_chunks, chunk, *v.shape[1:]))
             for k, v in arrays.items()}

  def evaluate(params):
    metrics = jax.lax.map(lambda batch: task.metrics(params, batch), stacked)
    return metrics["loss"].mean(), metrics["accuracy"].mean()

  return evaluate


def train_curves(lopt, meta, task: tasks_lib.Task, problem: InnerProblem, seeds: Sequence[int],
                 steps: int, eval_every: int, progress=None) -> dict[str, np.ndarray]:
  """Training losses ``[seeds, steps]`` and test metrics ``[seeds, evals]`` of one optimizer."""
  optimizer = lopt.opt_fn(meta)
  test_metrics = _test_metrics_fn(task, chunk=1000)
  keys = jnp.stack([jax.random.PRNGKey(seed) for seed in seeds])

  def start(key):
    init_key, _ = jax.random.split(key)
    return optimizer.init(problem.init(init_key), num_steps=steps)

  def chunk_fn(state, key, data, offset, length):
    data_key = jax.random.split(key)[1]

    def step(state, index):
      batch = problem.sample_batch(data, jax.random.fold_in(data_key, index))
      return problem.train_step(optimizer, state, batch)

    return jax.lax.scan(step, state, offset + jnp.arange(length))

  states = jax.jit(jax.vmap(start))(keys)
  evaluate = jax.jit(jax.vmap(lambda s: test_metrics(optimizer.get_params(s))))
  # The training data is an argument, not a constant baked into the program.
  run_chunk = jax.jit(jax.vmap(chunk_fn, in_axes=(0, 0, None, None, None)), static_argnums=4)
  losses, test_steps, test_losses, test_accuracies = [], [], [], []
  done = 0
  while True:
    if done % eval_every == 0 or done == steps:
      loss, accuracy = evaluate(states)
      test_steps.append(done)
      test_losses.append(np.asarray(loss))
      test_accuracies.append(np.asarray(accuracy))
    if done == steps:
      break
    length = min(eval_every - done % eval_every, steps - done)
    states, chunk_losses = run_chunk(states, keys, problem.data, done, length)
    losses.append(np.asarray(chunk_losses))
    done += length
    if progress is not None:
      progress.update(length)
  return {"train_loss": np.concatenate(losses, axis=1), "test_step": np.asarray(test_steps),
          "test_loss": np.stack(test_losses, axis=1),
          "test_accuracy": np.stack(test_accuracies, axis=1)}


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
  """Trailing mean over ``window`` steps along the last axis (shorter at the start)."""
  cumulative = np.cumsum(values, axis=-1, dtype=np.float64)
  lagged = np.zeros_like(cumulative)
  lagged[..., window:] = cumulative[..., :-window]
  counts = np.minimum(np.arange(1, values.shape[-1] + 1), window)
  return (cumulative - lagged) / counts


def mean_and_standard_error(values: np.ndarray) -> tuple[float, float]:
  values = np.asarray(values, np.float64)
  if len(values) == 0:
    return float("nan"), float("nan")
  if len(values) < 2:
    return float(values.mean()), float("nan")
  return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def summarize(curves: dict[str, dict[str, np.ndarray]], final_window: int,
              threshold: float | None) -> tuple[list[dict[str, Any]], float]:
  """The summary rows (see the module docstring) and the threshold used."""
  finals = {name: c["train_loss"][:, -final_window:].mean(axis=1) for name, c in curves.items()}
  # A seed whose loss went non-finite (the run diverged; the optimizer then skips every
  # update) is counted, and left out of the means (and so of the default threshold), which it
  # would make NaN.
  kept_of = {name: np.isfinite(finals[name]) & np.isfinite(c["test_loss"][:, -1])
             for name, c in curves.items()}
  finite = [float(finals[name][kept].mean()) for name, kept in kept_of.items() if kept.any()]
  if threshold is None:
    threshold = max(finite) if finite else float("nan")
  rows = []
  for name, c in curves.items():
    kept = kept_of[name]
    smooth = moving_average(c["train_loss"], final_window)
    reached = [int(np.argmax(s <= threshold)) + 1 if (s <= threshold).any() else None
               for s in smooth]
    hits = [r for r in reached if r is not None]
    train_mean, train_se = mean_and_standard_error(finals[name][kept])
    test_mean, test_se = mean_and_standard_error(c["test_loss"][kept, -1])
    accuracy_mean, accuracy_se = mean_and_standard_error(c["test_accuracy"][kept, -1])
    rows.append({
        "optimizer": name, "seeds": len(finals[name]),
        "seeds_diverged": int(len(kept) - kept.sum()),
        "final_train_loss": train_mean, "final_train_loss_se": train_se,
        "final_test_loss": test_mean, "final_test_loss_se": test_se,
        "final_test_accuracy": accuracy_mean, "final_test_accuracy_se": accuracy_se,
        "steps_to_threshold": float(np.mean(hits)) if hits else None,
        "seeds_reaching_threshold": len(hits)})
  return rows, threshold


def _write_csv(path: pathlib.Path, header: Sequence[str], rows) -> None:
  with atomic_open(path, "w", newline="") as handle:
    writer = csv.writer(handle)
    writer.writerow(header)
    writer.writerows(rows)


def is_finished(out: pathlib.Path, task_name: str, optimizers: Sequence[str], steps: int,
                seeds: int, task_options: dict | None = None) -> bool:
  """Whether ``out`` holds a finished `evaluate_optimizers` run of exactly this comparison.

  Lets scripts that resume (the reproduction, the ablation) skip an evaluation
  they already made; a different task, option, optimizer list, length or seed
  count means it must run again.
  """
  config_path, summary_path = out / "config.json", out / "summary.json"
  if not (config_path.is_file() and summary_path.is_file()):
    return False
  config = json.loads(config_path.read_text())
  wanted = {"task": task_name, "task_options": task_options or {},
            "optimizers": list(optimizers), "steps": steps, "seeds": seeds}
  return {key: config.get(key) for key in wanted} == wanted


def evaluate_optimizers(task_name: str, optimizers: Sequence[str], steps: int, seeds: int,
                        out: pathlib.Path, eval_every: int = 100, final_window: int = 50,
                        threshold: float | None = None, task_options: dict | None = None,
                        quiet: bool = False) -> list[dict[str, Any]]:
  """Runs the comparison and writes ``out``; returns the summary rows.

  Everything is checked (task, optimizers, data) before any training.

  Raises:
    ValueError: a count below 1. OptimizerSpecError (a ValueError): see
      `load_optimizers`. KeyError: an unknown task.
  """
  for what, value in (("steps", steps), ("seeds", seeds), ("eval_every", eval_every),
                      ("final_window", final_window)):
    if value < 1:
      raise ValueError(f"{what} must be at least 1, got {value}")
  task = tasks_lib.get_task(task_name, **(task_options or {}))
  loaded = load_optimizers(optimizers, task)  # bad input fails before compute
  problem = InnerProblem.from_task(task)
  out.mkdir(parents=True, exist_ok=True)
  (out / "config.json").write_text(json.dumps(
      {"task": task_name, "task_options": task_options or {}, "optimizers": list(optimizers),
       "labels": list(loaded), "steps": steps, "seeds": seeds, "eval_every": eval_every,
       "final_window": final_window}, indent=2))
  progress = None
  if not quiet:
    # Without tqdm (the data extra) there is no bar, and nothing else changes.
    from unf_lopt.extras import progress_bar  # pylint: disable=g-import-not-at-top
    progress = progress_bar(total=steps * len(loaded), desc=f"evaluating on {task_name}",
                            unit="step")
  curves = {}
  for label, (lopt, meta) in loaded.items():
    if progress is not None:
      progress.set_postfix(optimizer=label)
    curves[label] = train_curves(lopt, meta, task, problem, range(seeds), steps, eval_every,
                                 progress)
  if progress is not None:
    progress.close()
  _write_csv(out / "curves.csv", ["optimizer", "seed", "step", "train_loss"],
             ((label, seed, step + 1, f"{loss:.7g}") for label, c in curves.items()
              for seed in range(seeds) for step, loss in enumerate(c["train_loss"][seed])))
  _write_csv(out / "test.csv", ["optimizer", "seed", "step", "test_loss", "test_accuracy"],
             ((label, seed, int(step), f"{c['test_loss'][seed, i]:.7g}",
               f"{c['test_accuracy'][seed, i]:.7g}")
              for label, c in curves.items() for seed in range(seeds)
              for i, step in enumerate(c["test_step"])))
  rows, threshold = summarize(curves, final_window, threshold)
  columns = list(rows[0])
  _write_csv(out / "summary.csv", columns, ([row[c] for c in columns] for row in rows))
  (out / "summary.json").write_text(json.dumps(
      {"task": task_name, "threshold": threshold, "final_window": final_window, "rows": rows},
      indent=2))
  return rows


def format_summary(rows: Sequence[dict[str, Any]], threshold: float,
                   final_window: int | None = None) -> str:
  """The summary as a fixed-width table, with a line that explains its columns."""
  width = max([22, *(len(row["optimizer"]) for row in rows)])
  any_diverged = any(row.get("seeds_diverged", 0) for row in rows)
  lines = [f"{'optimizer':{width}s} {'final train loss':>20s} {'test accuracy':>16s} "
           f"{'steps to ' + format(threshold, '.4f'):>16s}"
           + (f" {'diverged':>9s}" if any_diverged else "")]
  for row in rows:
    steps = "not reached" if row["steps_to_threshold"] is None else \
        f"{row['steps_to_threshold']:.0f} ({row['seeds_reaching_threshold']}/{row['seeds']})"
    diverged = f" {row.get('seeds_diverged', 0):>5d}/{row['seeds']:<3d}" if any_diverged else ""
    lines.append(f"{row['optimizer']:{width}s} {row['final_train_loss']:11.4f} +- "
                 f"{row['final_train_loss_se']:.4f} {100 * row['final_test_accuracy']:9.2f}% +- "
                 f"{100 * row['final_test_accuracy_se']:.2f} {steps:>16s}{diverged}")
  window = f"the last {final_window} steps" if final_window else "the last steps"
  lines.append(
      f"(final train loss: mean over {window}, +- standard error over seeds; test accuracy at "
      f"the end; steps to {threshold:.4f}: first step where the smoothed training loss reaches "
      "it, averaged over the seeds that do, (k/n) = k of n seeds reach it"
      + ("; diverged: seeds whose loss went non-finite, left out of the means)"
         if any_diverged else ")"))
  return "\n".join(lines)
