"""The outer loop: Adam on the meta-parameters, fed by PES, with resumable run directories.

A run directory holds ``config.json`` (the resolved configuration),
``metrics.jsonl`` (one line per logged outer step), ``checkpoints/`` (see
`meta_train.checkpoints`) and, at the end, ``optimizer/`` (the trained
optimizer in `unf_lopt.save_checkpoint` format). Running again on an existing
directory continues from its newest checkpoint; the result is the same, bit
for bit on CPU, as a run that was never interrupted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import sys
import time
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from unf_lopt import tasks as tasks_lib
import unf_lopt as U
from unf_lopt.meta_train import checkpoints
from unf_lopt.meta_train.inner import InnerProblem
from unf_lopt.meta_train.pes import PESConfig, PESState, TruncatedPES, run_mesh

UPDATE_NETS = ("unf", "nfn", "deepset", "sgdm")
# "unf_lopt": our PES (meta_train.pes); "learned_optimization": its TruncatedPES
# (optional extra; meta_train.lo_backend).
BACKENDS = ("unf_lopt", "learned_optimization")
# Settings that may change when a run is resumed: they do not alter its results.
RESUMABLE_KEYS = ("outer_steps", "checkpoint_every", "log_every")


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
  """Meta-training settings. Defaults are the paper's (PAPER_FACTS section 6).

  The paper does not state the meta learning rate; 1e-3 with global-norm
  clipping at 1.0 is our default.
  """

  task: str = "mlp_fmnist"
  update_net: str = "unf"
  outer_steps: int = 50_000
  num_runs: int = 16
  trunc_length: int = 50
  horizon: int = 2000
  sigma: float = 0.01
  meta_loss: str = "mean"
  meta_learning_rate: float = 1e-3
  schedule: str = "constant"
  clip_norm: float = 1.0
  hidden: int = 32
  depth: int = 3
  seed: int = 0
  num_devices: int = 0  # 0: all local devices
  checkpoint_every: int = 500
  log_every: int = 10
  backend: str = "unf_lopt"

  def __post_init__(self):
    if self.backend not in BACKENDS:
      raise ValueError(f"unknown backend {self.backend!r}; expected one of {', '.join(BACKENDS)}")
    if self.update_net not in UPDATE_NETS:
      raise ValueError(f"unknown update net {self.update_net!r}; expected one of "
                       f"{', '.join(UPDATE_NETS)}")
    if self.schedule not in ("constant", "cosine"):
      raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
    for name in ("outer_steps", "checkpoint_every", "log_every"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
    if self.clip_norm <= 0 or self.meta_learning_rate <= 0:
      raise ValueError("clip_norm and meta_learning_rate must be positive")
    PESConfig(self.num_runs, self.trunc_length, self.horizon, self.sigma, self.meta_loss)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> "MetaTrainConfig":
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"unknown configuration keys {unknown}; known: {sorted(known)}")
    return cls(**values)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def fingerprint(self) -> str:
    """Hash of the settings that determine the results."""
    identity = {k: v for k, v in self.to_dict().items() if k not in RESUMABLE_KEYS}
    if identity["backend"] == "unf_lopt":
      del identity["backend"]  # so runs written before the option existed still resume
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


@flax.struct.dataclass
class TrainingState:
  meta_params: Any
  outer_state: Any
  pes_state: PESState


def _outer_optimizer(config: MetaTrainConfig) -> optax.GradientTransformation:
  learning_rate = config.meta_learning_rate
  if config.schedule == "cosine":
    learning_rate = optax.cosine_decay_schedule(learning_rate, config.outer_steps)
  return optax.chain(optax.clip_by_global_norm(config.clip_norm), optax.adam(learning_rate))


def scalars(meta: Any) -> dict[str, float]:
  """alpha, beta and g0 in their natural units."""
  out = {"alpha": float(jnp.exp(meta["log_alpha"])),
         "g0": float(jax.nn.sigmoid(meta["logit_g0"]))}
  if "log_beta" in meta:
    out["beta"] = float(jnp.exp(meta["log_beta"]))
  return out


def make_trainer(config: MetaTrainConfig, run_dir: os.PathLike | str | None = None,
                 quiet: bool = False):
  """The trainer of ``config.backend``: `MetaTrainer` or learned_optimization's.

  Raises:
    ImportError: ``backend="learned_optimization"`` where it is not installed
      (the message gives the install command).
  """
  if config.backend == "learned_optimization":
    from unf_lopt.meta_train.lo_backend import LOMetaTrainer  # pylint: disable=g-import-not-at-top
    return LOMetaTrainer(config, run_dir, quiet=quiet)
  return MetaTrainer(config, run_dir, quiet=quiet)


class MetaTrainer:
  """Builds everything a run needs from a config, checks it, then trains.

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
                       "trainer with make_trainer(config, ...)")
    self.config = config
    self.run_dir = pathlib.Path(run_dir) if run_dir is not None else None
    self.quiet = quiet
    self.task = tasks_lib.get_task(config.task)
    params_like = jax.eval_shape(self.task.init, jax.random.PRNGKey(0))
    self.lopt = U.NominalLOpt(config.update_net, spec=self.task.spec, params_like=params_like,
                              hidden=config.hidden, depth=config.depth)
    # Builds the update network on the task's weight space: a spec that does
    # not fit raises a SpecError naming the tensor and axis, before any compute.
    self._initial_meta = self.lopt.init(jax.random.fold_in(jax.random.PRNGKey(config.seed), 0))
    self.problem = InnerProblem.from_task(self.task)  # raises if the data is not prepared
    devices = jax.local_devices()
    if config.num_devices:
      if config.num_devices > len(devices):
        raise ValueError(f"num_devices={config.num_devices} but only {len(devices)} local "
                         "devices exist")
      devices = devices[:config.num_devices]
    self.mesh = run_mesh(devices) if len(devices) > 1 else None
    self.pes = TruncatedPES(
        self.lopt, self.problem,
        PESConfig(config.num_runs, config.trunc_length, config.horizon, config.sigma,
                  config.meta_loss),
        mesh=self.mesh)
    self.outer = _outer_optimizer(config)
    self._apply = jax.jit(self._apply_impl)
    if self.run_dir is not None:
      self._check_run_dir()

  # -- run directory --------------------------------------------------------

  def _check_run_dir(self) -> None:
    config_path = self.run_dir / "config.json"
    if config_path.exists():
      stored = json.loads(config_path.read_text())
      try:
        previous = MetaTrainConfig.from_dict(stored)
      except (TypeError, ValueError) as error:
        raise ValueError(f"{config_path} is not a meta-training config ({error})") from error
      if previous.fingerprint() != self.config.fingerprint():
        differing = sorted(k for k, v in self.config.to_dict().items()
                           if k not in RESUMABLE_KEYS and stored.get(k) != v)
        raise ValueError(
            f"{self.run_dir} holds a run with a different configuration (differs in: "
            f"{', '.join(differing)}); resume with the same settings or choose another --out")

  def _write_config(self) -> None:
    self.run_dir.mkdir(parents=True, exist_ok=True)
    path = self.run_dir / "config.json"
    staging = path.with_suffix(".json.tmp")
    staging.write_text(json.dumps(self.config.to_dict(), indent=2, sort_keys=True))
    os.replace(staging, path)

  def _truncate_metrics(self, last_step: int) -> None:
    """Drops log lines written after the checkpoint a resumed run starts from."""
    path = self.run_dir / "metrics.jsonl"
    if not path.exists():
      return
    kept = []
    for line in path.read_text().splitlines():
      try:
        if json.loads(line)["step"] <= last_step:
          kept.append(line)
      except (json.JSONDecodeError, KeyError):
        break  # a line cut short by a kill: drop it and what follows
    staging = path.with_suffix(".jsonl.tmp")
    staging.write_text("".join(line + "\n" for line in kept))
    os.replace(staging, path)

  # -- training -------------------------------------------------------------

  def _apply_impl(self, state: TrainingState, gradient):
    updates, outer_state = self.outer.update(gradient, state.outer_state, state.meta_params)
    return optax.apply_updates(state.meta_params, updates), outer_state

  def initial_state(self) -> TrainingState:
    key = jax.random.PRNGKey(self.config.seed)
    meta = self._initial_meta
    return TrainingState(meta_params=meta, outer_state=self.outer.init(meta),
                         pes_state=self.pes.init_state(meta, jax.random.fold_in(key, 1)))

  def _place(self, state: TrainingState, like: TrainingState) -> TrainingState:
    """Puts restored arrays on the devices (and shardings) of a fresh state."""
    return jax.tree.map(lambda x, ref: jax.device_put(x, ref.sharding), state, like)

  def step(self, state: TrainingState, outer_step: int):
    """One outer step: a PES estimate and an Adam update of the meta-parameters."""
    key = jax.random.fold_in(jax.random.PRNGKey(self.config.seed), 2 + outer_step)
    gradient, pes_state, metrics = self.pes.estimate(state.meta_params, state.pes_state, key)
    meta, outer_state = self._apply(state, gradient)
    metrics = dict(metrics, grad_norm=optax.tree.norm(gradient))
    return TrainingState(meta, outer_state, pes_state), metrics

  def _checkpoint(self, state: TrainingState, step: int) -> None:
    checkpoints.save(self.run_dir / "checkpoints", step, state, self.lopt, state.meta_params,
                     self.config.fingerprint(), metadata={"task": self.config.task})

  def run(self, stop_after: int | None = None):
    """Trains to ``outer_steps`` (or ``stop_after`` steps, for tests); returns the meta-params."""
    config = self.config
    state, start = self.initial_state(), 0
    if self.run_dir is not None:
      self._write_config()
      checkpoint_dir = self.run_dir / "checkpoints"
      checkpoints.remove_staging_leftovers(checkpoint_dir)
      restored = checkpoints.restore(checkpoint_dir, state, config.fingerprint())
      if restored is not None:
        start, loaded = restored
        state = self._place(loaded, state)
        self._truncate_metrics(start)
        self._say(f"resuming {self.run_dir} from outer step {start}")
    end = config.outer_steps if stop_after is None else min(config.outer_steps, start + stop_after)
    inner_steps = 2 * config.num_runs * config.trunc_length
    progress = self._progress(start, end)
    last_time, last_logged, totals = time.perf_counter(), start, None
    for outer_step in range(start, end):
      state, metrics = self.step(state, outer_step)
      totals = metrics if totals is None else jax.tree.map(jnp.add, totals, metrics)
      done = outer_step + 1
      if done % config.log_every == 0 or done == end:
        # Means over the steps since the last line (resets and blow-ups: totals).
        count = done - last_logged
        record = {"step": done}
        for name, value in totals.items():
          record[name] = float(value) if name in ("resets", "blowups") else float(value) / count
        now = time.perf_counter()
        record.update(scalars(state.meta_params))
        record["inner_steps_per_s"] = inner_steps * count / (now - last_time)
        last_time, last_logged, totals = now, done, None
        self._log(record)
        if progress is not None:
          progress.set_postfix(meta_loss=f"{record['meta_loss']:.4f}", resets=int(record["resets"]))
      if progress is not None:
        progress.update(1)
      if self.run_dir is not None and (done % config.checkpoint_every == 0 or done == end):
        self._checkpoint(state, done)
    if progress is not None:
      progress.close()
    if self.run_dir is not None and end == config.outer_steps:
      U.save_checkpoint(self.run_dir / "optimizer", self.lopt, state.meta_params,
                        metadata={"task": config.task, "outer_steps": config.outer_steps,
                                  "config": config.to_dict()})
      self._say(f"trained optimizer written to {self.run_dir / 'optimizer'}")
    self.state = state
    return state.meta_params

  # -- output ---------------------------------------------------------------

  def _say(self, message: str) -> None:
    if not self.quiet:
      print(message, file=sys.stderr)

  def _progress(self, start: int, end: int):
    if self.quiet:
      return None
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    return tqdm(total=end, initial=start, desc=f"{self.config.update_net} on {self.config.task}",
                unit="outer step", dynamic_ncols=True)

  def _log(self, record: dict[str, Any]) -> None:
    if self.run_dir is None:
      return
    with open(self.run_dir / "metrics.jsonl", "a") as handle:
      handle.write(json.dumps(record) + "\n")
