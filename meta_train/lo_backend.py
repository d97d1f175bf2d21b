"""``unf-meta-train --backend learned_optimization``: the same meta-training through its PES.

The learned optimizer, its initial meta-parameters, the task and the outer
optimizer (Adam with global-norm clipping, optional cosine schedule) are those
of `meta_train.trainer.MetaTrainer`; the gradient estimate comes from
learned_optimization's ``TruncatedPES`` (one jitted unroll of ``trunc_length``
steps per particle sign, a ``ConstantTruncationSchedule`` of the episode
length, first episodes shortened by a random number of steps) and the outer
loop is its ``SingleMachineGradientLearner``. Our tasks are wrapped with
`as_lo_task_family`; ``lo:`` tasks use learned_optimization's own family, so a
family such as ``lo:quadratic_family`` samples a new task configuration per
episode (our backend trains on one sampled instance).

The run directory gets ``config.json``, ``metrics.jsonl`` (outer step,
meta-loss, alpha/beta/g0, inner steps/s), the meta-parameters every
``checkpoint_every`` steps in ``checkpoints/step_N/optimizer/`` and at the end
``optimizer/``, all in our checkpoint format. Differences from our backend:
no resuming (learned_optimization's data iterators and PES state are not
restorable here, so an existing run directory is refused), ``--meta-loss
final`` is not available (its PES averages the truncation), and it runs on
one device.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time
from typing import Any

import jax

from unf_lopt import tasks as tasks_lib
import unf_lopt as U
from unf_lopt.meta_train.pes import PESConfig
from unf_lopt.meta_train.trainer import MetaTrainConfig, _outer_optimizer, scalars
from unf_lopt.integrations import learned_optimization as lo_integration

lo = lo_integration.lo


class LOMetaTrainer:
  """Meta-trains ``config.update_net`` on ``config.task`` with learned_optimization's PES.

  Construction checks everything (task, spec, data, run directory) before any
  meta-training compute, as `MetaTrainer` does.

  Args:
    config: the meta-training settings (``config.backend`` is not consulted).
    run_dir: output directory, or None for no outputs.
    quiet: no log lines on stderr.
    steps_per_jit: inner steps per jitted unroll call of learned_optimization's
      PES (must divide ``trunc_length``); default ``trunc_length``, i.e. one
      call per perturbation sign and truncation (its own default is 10).
  """

  def __init__(self, config: MetaTrainConfig, run_dir: os.PathLike | str | None = None,
               quiet: bool = False, steps_per_jit: int | None = None):
    if config.meta_loss != "mean":
      raise ValueError("learned_optimization's TruncatedPES averages the losses of a "
                       "truncation; --meta-loss final needs --backend unf_lopt")
    self.config = config
    self.run_dir = pathlib.Path(run_dir) if run_dir is not None else None
    self.quiet = quiet
    if self.run_dir is not None and (self.run_dir / "config.json").exists():
      raise ValueError(f"{self.run_dir} already holds a run; the learned_optimization backend "
                       "cannot resume, choose another --out")
    self.task = tasks_lib.get_task(config.task)
    params_like = jax.eval_shape(self.task.init, jax.random.PRNGKey(0))
    self.lopt = U.NominalLOpt(config.update_net, spec=self.task.spec, params_like=params_like,
                              hidden=config.hidden, depth=config.depth)
    # The same initial meta-parameters as MetaTrainer's (and a SpecError before any compute).
    initial_meta = self.lopt.init(jax.random.fold_in(jax.random.PRNGKey(config.seed), 0))
    self.learned_opt = lo_integration.as_lo_learned_optimizer(self.lopt, initial_meta)
    episode = PESConfig(config.num_runs, config.trunc_length, config.horizon,
                        config.sigma).episode_length
    family = lo_integration.as_lo_task_family(self.task)  # reads the data: fails early
    self.estimator = lo.truncated_pes.TruncatedPES(
        family, self.learned_opt, lo.truncation_schedule.ConstantTruncationSchedule(episode),
        num_tasks=config.num_runs, trunc_length=config.trunc_length,
        random_initial_iteration_offset=episode, std=config.sigma,
        steps_per_jit=steps_per_jit or config.trunc_length)
    self.learner = lo.gradient_learner.SingleMachineGradientLearner(
        self.learned_opt, [self.estimator], lo.opt_base.OptaxOptimizer(_outer_optimizer(config)),
        num_steps=config.outer_steps)

  def initial_state(self):
    return self.learner.init(jax.random.fold_in(jax.random.PRNGKey(self.config.seed), 1))

  def meta_params(self, state) -> Any:
    return self.learner.gradient_learner.get_lopt_params(state.gradient_learner_state)

  def step(self, state, outer_step: int):
    """One outer step: ``(next state, mean meta-loss)``."""
    key = jax.random.fold_in(jax.random.PRNGKey(self.config.seed), 2 + outer_step)
    state, loss, _ = self.learner.update(state, key, with_metrics=False)
    return state, loss

  def run(self):
    """Trains ``outer_steps`` outer steps; returns the meta-parameters."""
    config = self.config
    if self.run_dir is not None:
      self.run_dir.mkdir(parents=True, exist_ok=True)
      (self.run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2,
                                                           sort_keys=True))
    state = self.initial_state()
    inner_steps = 2 * config.num_runs * config.trunc_length
    last_time, last_logged, loss_sum = time.perf_counter(), 0, 0.0
    for outer_step in range(config.outer_steps):
      state, loss = self.step(state, outer_step)
      loss_sum += float(loss)
      done = outer_step + 1
      if done % config.log_every == 0 or done == config.outer_steps:
        now = time.perf_counter()
        record = {"step": done, "meta_loss": loss_sum / (done - last_logged),
                  **scalars(self.meta_params(state)),
                  "inner_steps_per_s": inner_steps * (done - last_logged) / (now - last_time)}
        last_time, last_logged, loss_sum = now, done, 0.0
        self._log(record)
      if self.run_dir is not None and done % config.checkpoint_every == 0:
        U.save_checkpoint(self.run_dir / "checkpoints" / f"step_{done:07d}" / "optimizer",
                          self.lopt, self.meta_params(state), metadata=self._metadata(done))
    meta = self.meta_params(state)
    if self.run_dir is not None:
      U.save_checkpoint(self.run_dir / "optimizer", self.lopt, meta,
                        metadata={**self._metadata(config.outer_steps), "config": config.to_dict()})
      self._say(f"trained optimizer written to {self.run_dir / 'optimizer'}")
    self.state = state
    return meta

  def _metadata(self, step: int) -> dict[str, Any]:
    return {"task": self.config.task, "outer_steps": step, "backend": "learned_optimization"}

  def _say(self, message: str) -> None:
    if not self.quiet:
      print(message, file=sys.stderr)

  def _log(self, record: dict[str, Any]) -> None:
    if not self.quiet:
      self._say(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in record.items()))
    if self.run_dir is not None:
      with open(self.run_dir / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
