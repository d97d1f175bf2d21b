"""The meta-training core both backends share: build, resume, step, log, checkpoint, stop.

A backend (`meta_train.trainer.MetaTrainer`, `meta_train.lo_backend.LOMetaTrainer`)
subclasses `OuterTrainer` and supplies only its gradient estimator: how to make
the initial training state, one outer step, and where the meta-parameters are
in its state. Everything else is here:

* construction: the task, the learned optimizer on its weight space, the
  initial meta-parameters, the outer optimizer and the run directory, all
  checked before any meta-training compute;
* the outer loop: resuming from the newest checkpoint (and dropping metric rows
  an interrupted attempt wrote past it), a metrics row every ``log_every``
  steps, a checkpoint every ``checkpoint_every`` steps, the trained optimizer
  at the end;
* a guard that stops with `NonFiniteMetaParamsError` instead of logging or
  checkpointing non-finite meta-parameters;
* Ctrl-C: a checkpoint at the last finished outer step, then
  `TrainingInterrupted` saying what was saved;
* several processes (`meta_train.distributed`): every process computes, only
  the primary one writes the run directory, and every one reads it to resume.
"""

from __future__ import annotations

import abc
import logging
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp

from unf_lopt import tasks as tasks_lib
import unf_lopt as U
from unf_lopt.meta_train import checkpoints, distributed
from unf_lopt.meta_train.config import MetaTrainConfig, RunKeys, outer_optimizer
from unf_lopt.meta_train.metrics_log import MetricsWindow
from unf_lopt.meta_train.run_directory import RunDirectory

logger = logging.getLogger(__name__)
PyTree = Any


class TrainingInterrupted(Exception):
  """Ctrl-C stopped `OuterTrainer.run`; the message says what was saved.

  Attributes:
    step: the outer step a resumed run continues from (steps finished, where
      nothing could be saved).
    checkpoint: the checkpoint directory of ``step``, or None if there is none.
  """

  def __init__(self, message: str, step: int, checkpoint: pathlib.Path | None):
    super().__init__(message)
    self.step = step
    self.checkpoint = checkpoint


class NonFiniteMetaParamsError(FloatingPointError):
  """The meta-parameters stopped being finite (nothing non-finite is logged or saved)."""


def scalars(meta: PyTree) -> dict[str, float]:
  """alpha, beta and g0 of the meta-parameters, in their natural units."""
  out = {"alpha": float(jnp.exp(meta["log_alpha"])),
         "g0": float(jax.nn.sigmoid(meta["logit_g0"]))}
  if "log_beta" in meta:
    out["beta"] = float(jnp.exp(meta["log_beta"]))
  return out


def _all_finite(tree: PyTree) -> bool:
  return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree))


class OuterTrainer(abc.ABC):
  """Meta-trains ``config.update_net`` on ``config.task``; subclasses estimate the gradient.

  Args:
    config: the settings.
    run_dir: output directory (resumed if it holds a run), or None for no outputs.
    quiet: no progress bar. Messages go to the ``logging`` loggers of
      ``unf_lopt.meta_train``; ``unf-meta-train`` shows them on stderr.

  Attributes:
    task, lopt: the task and the learned optimizer built on its weight space.
    initial_meta_params: where meta-training starts (the same for every backend).
    outer: the outer optimizer (`meta_train.config.outer_optimizer`).
    state: the training state after the last finished outer step of `run`.
  """

  # Whether `initial_state` / checkpoints hold everything needed to continue a run.
  resumable: bool = True

  def __init__(self, config: MetaTrainConfig, run_dir: os.PathLike | str | None = None,
               quiet: bool = False):
    self.config = config
    self.quiet = quiet
    self.keys = RunKeys(config.seed)
    self.run_dir = (RunDirectory(run_dir, config, resumable=self.resumable)
                    if run_dir is not None else None)
    self.task = tasks_lib.get_task(config.task, **config.task_options)
    params_like = jax.eval_shape(self.task.init, jax.random.PRNGKey(0))
    self.lopt = U.NominalLOpt(config.update_net, spec=self.task.spec, params_like=params_like,
                              hidden=config.hidden, depth=config.depth, momentum=config.momentum,
                              feature_normalization=config.feature_normalization,
                              initial_beta=config.initial_beta,
                              nfn_head_bias=config.nfn_head_bias,
                              identity_share=config.identity_share)
    # Builds the update network on the task's weight space: a spec that does
    # not fit raises a SpecError naming the tensor and axis, before any compute.
    self.initial_meta_params = self.lopt.init(self.keys.meta_init)
    self.outer = outer_optimizer(config)
    self.state = None
    self._finished_steps = 0
    self._checkpointed_step = None

  # -- what a backend supplies ----------------------------------------------

  @abc.abstractmethod
  def initial_state(self) -> Any:
    """The training state before the first outer step."""

  @abc.abstractmethod
  def step(self, state: Any, outer_step: int) -> tuple[Any, dict[str, jax.Array]]:
    """One outer step: ``(next state, metrics)``; metrics hold at least ``meta_loss``."""

  @abc.abstractmethod
  def meta_params(self, state: Any) -> PyTree:
    """The meta-parameters in ``state``."""

  # -- the loop ---------------------------------------------------------------

  def run(self, stop_after: int | None = None) -> PyTree:
    """Trains to ``outer_steps`` (or ``stop_after`` more steps); returns the meta-parameters.

    Raises:
      TrainingInterrupted: on Ctrl-C, after saving a checkpoint of the last
        finished outer step where there is a run directory.
      NonFiniteMetaParamsError: the meta-parameters became non-finite.
    """
    config = self.config
    finished = self._finished_meta_params()
    if finished is not None:
      return finished
    state, start = self._start()
    end = config.outer_steps if stop_after is None else min(config.outer_steps, start + stop_after)
    window = MetricsWindow(start, 2 * config.num_runs * config.trunc_length)
    progress = self._progress_bar(start, end)
    try:
      for outer_step in range(start, end):
        state = self._outer_step(state, outer_step, end, window, progress)
      if self.run_dir is not None and end == config.outer_steps:
        meta = distributed.to_host(self._checked_meta_params(state, end))
        if distributed.is_primary():
          path = self.run_dir.save_optimizer(self.lopt, meta)
          logger.info("trained optimizer written to %s", path)
    except KeyboardInterrupt:
      raise self._save_after_interrupt() from None
    finally:
      if progress is not None:
        progress.close()
      if self.run_dir is not None and distributed.is_primary():
        self.run_dir.metrics.close()
    return self.meta_params(state)

  def _finished_meta_params(self) -> PyTree | None:
    """The trained meta-parameters of a run that already finished, or None.

    A finished run (newest checkpoint at ``outer_steps``, trained optimizer
    written) is not restored: its optimizer is all there is left to return, and
    it loads even where the training state was written in an older layout.
    """
    if self.run_dir is None or not self.resumable:
      return None
    steps = checkpoints.complete_steps(self.run_dir.checkpoint_dir)
    final = self.run_dir.optimizer_path
    if not steps or steps[-1] != self.config.outer_steps or not final.is_dir():
      return None
    _, meta = U.load_checkpoint(final)
    logger.info("%s finished all %d outer steps; its optimizer is %s", self.run_dir.path,
                self.config.outer_steps, final)
    if distributed.is_primary():
      self.run_dir.metrics.close()
    return meta

  def _start(self) -> tuple[Any, int]:
    """The state and step to start from: fresh, or the run directory's newest checkpoint."""
    state, start = self.initial_state(), 0
    if self.run_dir is not None:
      primary = distributed.is_primary()
      if primary:
        self.run_dir.write_config()
      restored = (self.run_dir.restore(state, clean_up=primary) if self.resumable else None)
      if restored is not None:
        start, loaded = restored
        state = distributed.to_devices(loaded, state)
        logger.info("resuming %s from outer step %d", self.run_dir.path, start)
      if primary:
        self.run_dir.metrics.open(start)
    self.state, self._finished_steps = state, start
    self._checkpointed_step = start if start else None  # a resumed run starts at a checkpoint
    return state, start

  def _outer_step(self, state, outer_step: int, end: int, window: MetricsWindow, progress):
    config = self.config
    state, metrics = self.step(state, outer_step)
    window.add(metrics)
    done = outer_step + 1
    if done % config.log_every == 0 or done == end:
      record = window.row(done)
      record.update(scalars(self._checked_meta_params(state, done)))
      self._log(record, progress)
    # From here on the row of `done` is written: an interrupt saves `done`.
    self.state, self._finished_steps = state, done
    if self.run_dir is not None and (done % config.checkpoint_every == 0 or done == end):
      self._checkpoint(state, done)
    if progress is not None:
      progress.update(1)
    return state

  def _checked_meta_params(self, state, step: int) -> PyTree:
    meta = self.meta_params(state)
    if not _all_finite(meta):
      last = (f"the last checkpoint is outer step {self._checkpointed_step}"
              if self._checkpointed_step else "no checkpoint was written")
      raise NonFiniteMetaParamsError(
          f"the meta-parameters are not finite after outer step {step} ({last}); try a smaller "
          "--meta-learning-rate, --clip-norm or --sigma")
    return meta

  def _checkpoint(self, state, step: int) -> pathlib.Path:
    meta = distributed.to_host(self._checked_meta_params(state, step))
    # Gathering runs sharded over other processes is a collective: every process takes part.
    host_state = distributed.to_host(state) if self.resumable else None
    path = self.run_dir.checkpoint_dir / f"step_{step:07d}"
    if distributed.is_primary():
      path = self.run_dir.save_checkpoint(step, self.lopt, meta, host_state)
    self._checkpointed_step = step
    logger.debug("checkpoint written to %s", path)
    return path

  def _save_after_interrupt(self) -> TrainingInterrupted:
    """Saves the last finished step (where not saved yet) and says what there is to resume."""
    step = self._finished_steps
    stopped = f"interrupted after outer step {step}"
    if self.run_dir is None:
      return TrainingInterrupted(f"{stopped}; nothing was saved (no run directory)", step, None)
    resume = "run the same command to resume" if self.resumable else "this backend cannot resume"
    if step == self._checkpointed_step:
      path = self.run_dir.checkpoint_dir / f"step_{step:07d}"
      return TrainingInterrupted(f"{stopped}; its checkpoint is {path} ({resume})", step, path)
    if step == 0:
      return TrainingInterrupted(f"{stopped}; nothing was saved", step, None)
    if jax.process_count() > 1:
      # Saving now would need every process in a collective, and the others may not stop here.
      path = (self.run_dir.checkpoint_dir / f"step_{self._checkpointed_step:07d}"
              if self._checkpointed_step else None)
      newest = f"the newest checkpoint is {path}" if path else "nothing was saved"
      return TrainingInterrupted(f"{stopped}; {newest} ({resume})",
                                 self._checkpointed_step or 0, path)
    try:
      path = self._checkpoint(self.state, step)
    except (KeyboardInterrupt, OSError, NonFiniteMetaParamsError) as error:
      reason = "interrupted again" if isinstance(error, KeyboardInterrupt) else str(error)
      if self._checkpointed_step:
        path = self.run_dir.checkpoint_dir / f"step_{self._checkpointed_step:07d}"
        return TrainingInterrupted(f"{stopped}; its checkpoint could not be written ({reason}); "
                                   f"the newest is {path} ({resume})", self._checkpointed_step,
                                   path)
      return TrainingInterrupted(f"{stopped}; nothing was saved ({reason})", step, None)
    return TrainingInterrupted(f"{stopped}; checkpoint saved to {path} ({resume})", step, path)

  # -- output -------------------------------------------------------------------

  def _progress_bar(self, start: int, end: int):
    if self.quiet or not distributed.is_primary():
      return None
    # Without tqdm (the data extra) there is no bar, and nothing else changes.
    from unf_lopt.extras import progress_bar  # pylint: disable=g-import-not-at-top
    return progress_bar(total=end, initial=start,
                        desc=f"{self.config.update_net} on {self.config.task}",
                        unit="outer step", dynamic_ncols=True)

  def _log(self, record: dict[str, Any], progress) -> None:
    logger.debug(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in record.items()))
    if self.run_dir is not None and distributed.is_primary():
      self.run_dir.metrics.write(record)
    if progress is not None:
      postfix = {"meta_loss": f"{record['meta_loss']:.4f}"}
      if "resets" in record:
        postfix["resets"] = int(record["resets"])
      progress.set_postfix(postfix)
