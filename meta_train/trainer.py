"""Meta-training with this package's PES: `MetaTrainer`.

The outer loop, run directory, resuming, logging and Ctrl-C handling are the
shared core's (`meta_train.outer_loop`); this module adds the gradient
estimator: `meta_train.pes.TruncatedPES`, its runs optionally sharded over
devices, and the outer update of the meta-parameters. A run directory holds
``config.json``, ``metrics.jsonl``, ``checkpoints/`` and, at the end,
``optimizer/`` (see `meta_train.run_directory`). Running again on an existing
directory continues from its newest checkpoint; the result is the same, bit
for bit on CPU, as a run that was never interrupted.
"""

from __future__ import annotations

import os
from typing import Any

import flax.struct
import jax
import optax

# Re-exported: the config is where most users start (`from ...trainer import MetaTrainConfig`).
from unf_lopt.meta_train.config import RESUMABLE_KEYS, MetaTrainConfig
from unf_lopt.meta_train.inner import InnerProblem
from unf_lopt.meta_train.outer_loop import OuterTrainer
from unf_lopt.meta_train.pes import PESConfig, PESState, TruncatedPES, run_mesh

__all__ = ["RESUMABLE_KEYS", "MetaTrainConfig", "MetaTrainer", "TrainingState", "device_mesh"]


@flax.struct.dataclass
class TrainingState:
  """Everything a run needs to continue: meta-parameters, outer optimizer state, PES runs."""

  meta_params: Any
  outer_state: Any
  pes_state: PESState


def device_mesh(num_devices: int) -> jax.sharding.Mesh | None:
  """A mesh over the first ``num_devices`` devices (0: all); None for one device.

  In a multi-process run (`meta_train.distributed`) the devices are those of
  every process, and the mesh must span them all.

  Raises:
    ValueError: more devices are asked for than exist, or a multi-process run
      asks for fewer than all.
  """
  devices = jax.devices()
  if num_devices > len(devices):
    raise ValueError(f"num_devices={num_devices} but only {len(devices)} devices exist")
  if num_devices and jax.process_count() > 1 and num_devices != len(devices):
    raise ValueError(f"num_devices={num_devices}: a run over {jax.process_count()} processes "
                     f"shards its runs over all {len(devices)} devices (use 0)")
  if num_devices:
    devices = devices[:num_devices]
  return run_mesh(devices) if len(devices) > 1 else None


class MetaTrainer(OuterTrainer):
  """Meta-trains with `meta_train.pes.TruncatedPES` (the ``unf_lopt`` backend).

  All checks (task name, update net, spec against the parameters, data
  availability, the run directory's config) happen in the constructor,
  before any meta-training compute.

  Example:

    >>> import tempfile
    >>> config = MetaTrainConfig(task="tiny_mlp", update_net="sgdm", outer_steps=3,
    ...                          num_runs=2, trunc_length=2, horizon=4)
    >>> trainer = MetaTrainer(config, tempfile.mkdtemp(), quiet=True)
    >>> meta = trainer.run()
    >>> sorted(meta)
    ['log_alpha', 'logit_g0']
  """

  def __init__(self, config: MetaTrainConfig, run_dir: os.PathLike | str | None = None,
               quiet: bool = False):
    if config.backend != "unf_lopt":
      raise ValueError(f"MetaTrainer runs the unf_lopt backend, not {config.backend!r}: build the "
                       "trainer with meta_train.backends.make_trainer(config, ...)")
    super().__init__(config, run_dir, quiet)
    # Raises if the data is not prepared.
    self.problem = InnerProblem.from_task(self.task,
                                          max_device_data_mb=config.max_device_data_mb)
    self.mesh = device_mesh(config.num_devices)
    self.pes = TruncatedPES(
        self.lopt, self.problem,
        PESConfig(config.num_runs, config.trunc_length, config.horizon, config.sigma,
                  config.meta_loss),
        mesh=self.mesh)
    self._apply = jax.jit(self._apply_impl)

  def _apply_impl(self, state: TrainingState, gradient):
    updates, outer_state = self.outer.update(gradient, state.outer_state, state.meta_params)
    return optax.apply_updates(state.meta_params, updates), outer_state

  def initial_state(self) -> TrainingState:
    meta = self.initial_meta_params
    return TrainingState(meta_params=meta, outer_state=self.outer.init(meta),
                         pes_state=self.pes.init_state(meta, self.keys.state_init))

  def step(self, state: TrainingState, outer_step: int):
    """One outer step: a PES estimate and an Adam update of the meta-parameters."""
    gradient, pes_state, metrics = self.pes.estimate(state.meta_params, state.pes_state,
                                                     self.keys.outer_step(outer_step))
    meta, outer_state = self._apply(state, gradient)
    metrics = dict(metrics, grad_norm=optax.tree.norm(gradient))
    return TrainingState(meta, outer_state, pes_state), metrics

  def meta_params(self, state: TrainingState) -> Any:
    return state.meta_params
