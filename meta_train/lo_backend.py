"""``unf-meta-train --backend learned_optimization``: the same meta-training through its PES.

The learned optimizer, its initial meta-parameters, the task, the outer
optimizer (Adam with global-norm clipping, optional cosine schedule) and the
outer loop with its outputs are the shared core's (`meta_train.outer_loop`),
as for `meta_train.trainer.MetaTrainer`; the gradient estimate comes from
learned_optimization's ``TruncatedPES`` (one jitted unroll of ``trunc_length``
steps per particle sign, a ``ConstantTruncationSchedule`` of the episode
length, first episodes shortened by a random number of steps) and the outer
update from its ``SingleMachineGradientLearner``. Our tasks are wrapped with
`tasks.lo_tasks.as_lo_task_family`; ``lo:`` tasks use learned_optimization's own
family, so a family such as ``lo:quadratic_family`` samples a new task
configuration per episode (our backend trains on one sampled instance).

The run directory gets ``config.json``, ``metrics.jsonl`` (outer step,
meta-loss, alpha/beta/g0, inner steps/s), the meta-parameters every
``checkpoint_every`` steps (and on Ctrl-C) in ``checkpoints/step_N/optimizer/``
and at the end ``optimizer/``, all in our checkpoint format. Differences from
our backend: no resuming (learned_optimization's data iterators and PES state
are not restorable here, so an existing run directory is refused), ``--meta-loss
final`` is not available (its PES averages the truncation), and it runs on one
device.
"""

from __future__ import annotations

import os
from typing import Any

from unf_lopt.integrations import learned_optimization as lo_integration
from unf_lopt.meta_train.config import MetaTrainConfig
from unf_lopt.meta_train.outer_loop import OuterTrainer
from unf_lopt.meta_train.pes import PESConfig
from unf_lopt.tasks import lo_tasks

lo = lo_integration.lo


class LOMetaTrainer(OuterTrainer):
  """Meta-trains ``config.update_net`` on ``config.task`` with learned_optimization's PES.

  Construction checks everything (task, spec, data, run directory) before any
  meta-training compute, as `MetaTrainer` does.

  Args:
    config: the meta-training settings (``config.backend`` is not consulted).
    run_dir: output directory, or None for no outputs.
    quiet: no progress bar.
    steps_per_jit: inner steps per jitted unroll call of learned_optimization's
      PES (must divide ``trunc_length``); default ``trunc_length``, i.e. one
      call per perturbation sign and truncation (its own default is 10).
  """

  resumable = False  # its data iterators and PES state are not restorable here

  def __init__(self, config: MetaTrainConfig, run_dir: os.PathLike | str | None = None,
               quiet: bool = False, steps_per_jit: int | None = None):
    if config.meta_loss != "mean":
      raise ValueError("learned_optimization's TruncatedPES averages the losses of a "
                       "truncation; --meta-loss final needs --backend unf_lopt")
    super().__init__(config, run_dir, quiet)
    self.learned_opt = lo_integration.as_lo_learned_optimizer(self.lopt, self.initial_meta_params)
    episode = PESConfig(config.num_runs, config.trunc_length, config.horizon,
                        config.sigma).episode_length
    family = lo_tasks.as_lo_task_family(self.task)  # reads the data: fails early
    self.estimator = lo.truncated_pes.TruncatedPES(
        family, self.learned_opt, lo.truncation_schedule.ConstantTruncationSchedule(episode),
        num_tasks=config.num_runs, trunc_length=config.trunc_length,
        random_initial_iteration_offset=episode, std=config.sigma,
        steps_per_jit=steps_per_jit or config.trunc_length)
    self.learner = lo.gradient_learner.SingleMachineGradientLearner(
        self.learned_opt, [self.estimator], lo.opt_base.OptaxOptimizer(self.outer),
        num_steps=config.outer_steps)

  def initial_state(self):
    return self.learner.init(self.keys.state_init)

  def meta_params(self, state) -> Any:
    return self.learner.gradient_learner.get_lopt_params(state.gradient_learner_state)

  def step(self, state, outer_step: int):
    """One outer step: ``(next state, {"meta_loss": mean meta-loss})``."""
    state, loss, _ = self.learner.update(state, self.keys.outer_step(outer_step),
                                         with_metrics=False)
    return state, {"meta_loss": loss}
