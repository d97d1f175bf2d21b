"""Meta-training settings: `MetaTrainConfig`, its fingerprint and the outer optimizer it names."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import jax
import optax

from unf_lopt import features, update_nets
from unf_lopt.optimizer import INITIAL_BETA
from unf_lopt.meta_train.pes import PESConfig

# The learned update networks, plus the two-scalar "sgdm" optimizer (no network).
UPDATE_NETS = update_nets.META_TRAINABLE
# "unf_lopt": our PES (meta_train.trainer); "learned_optimization": its TruncatedPES
# (optional extra; meta_train.lo_backend).
BACKENDS = ("unf_lopt", "learned_optimization")
# Settings that may change when a run is resumed: they do not alter its results.
# Settings that do not change the results: a run may resume with other values.
RESUMABLE_KEYS = ("outer_steps", "checkpoint_every", "log_every", "tensorboard",
                  "max_device_data_mb")
# Settings added after runs were written: left out of the fingerprint while at
# these defaults, so those runs still resume.
LATER_DEFAULTS = {"backend": "unf_lopt", "task_options": {}, "momentum": "accumulate",
                  "feature_normalization": "per_channel", "initial_beta": INITIAL_BETA,
                  "nfn_head_bias": True, "identity_share": None}
# Outer steps in a row whose meta-gradient may be non-finite before the update is
# applied anyway (and the run stops with NonFiniteMetaParamsError).
MAX_NONFINITE_UPDATES = 10

_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "dict": dict}
# The annotation suffix of a setting that may be None (its flag is then not required).
OPTIONAL_TYPE_SUFFIX = " | None"


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
  """Meta-training settings.

  Defaults are the UNF paper's (Zhou et al. 2024, Appendix B.2): 50,000 outer
  steps of Adam, 16 runs, truncation 50, horizon 2,000, sigma 0.01, clipping 1.0.

  The paper does not state the meta learning rate; 1e-3 with global-norm
  clipping at 1.0 is our default.

  ``momentum``, ``feature_normalization`` and ``initial_beta`` are the learned
  optimizer's options (`unf_lopt.NominalLOpt`): the paper's reading by default,
  ``"ema"``, ``"clip_per_tensor"`` and ``1e-4`` for the authors' released code.
  ``nfn_head_bias`` too (Table 3's NFN rows: with a head bias for the MLP,
  without for the CNN), and ``identity_share`` (the ``unf`` head's
  initialisation; None: every basis term alike).

  Raises:
    ValueError: naming the field, for a value of the wrong type or out of range.
  """

  task: str = "mlp_fmnist"
  # Options of `tasks.get_task(task, **task_options)`, e.g. {"spec": "paper"}.
  task_options: dict = dataclasses.field(default_factory=dict)
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
  momentum: str = "accumulate"
  feature_normalization: str = "per_channel"
  initial_beta: float = INITIAL_BETA
  nfn_head_bias: bool = True
  identity_share: float | None = None
  seed: int = 0
  num_devices: int = 0  # 0: all local devices
  checkpoint_every: int = 500
  log_every: int = 10
  backend: str = "unf_lopt"
  tensorboard: bool = False
  # A training split larger than this stays in host memory and is streamed
  # (`meta_train.inner`); the batches are the same either way.
  max_device_data_mb: float = 4096.0

  def __post_init__(self):
    self._check_types()
    if self.backend not in BACKENDS:
      raise ValueError(f"unknown backend {self.backend!r}; expected one of {', '.join(BACKENDS)}")
    if self.update_net not in UPDATE_NETS:
      raise ValueError(f"unknown update net {self.update_net!r}; expected one of "
                       f"{', '.join(UPDATE_NETS)}")
    features.check_choice("momentum", self.momentum, features.MOMENTUM_KINDS)
    features.check_choice("feature_normalization", self.feature_normalization,
                          features.FEATURE_NORMALIZATIONS)
    if self.schedule not in ("constant", "cosine"):
      raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
    for name in ("outer_steps", "checkpoint_every", "log_every"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
    for name in ("clip_norm", "meta_learning_rate", "initial_beta"):
      if getattr(self, name) <= 0:
        raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
    if self.identity_share is not None and not 0 < self.identity_share < 1:
      raise ValueError(f"identity_share must be in (0, 1), got {self.identity_share}")
    for name in ("hidden", "depth", "seed", "num_devices", "max_device_data_mb"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
    PESConfig(self.num_runs, self.trunc_length, self.horizon, self.sigma, self.meta_loss)

  def _check_types(self) -> None:
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if field.type.endswith(OPTIONAL_TYPE_SUFFIX) and value is None:
        continue
      expected = _TYPES[field.type.removesuffix(OPTIONAL_TYPE_SUFFIX)]
      if expected is float and isinstance(value, int) and not isinstance(value, bool):
        object.__setattr__(self, field.name, float(value))  # 1 for 1.0, as JSON writes it
        continue
      # bool is an int to isinstance, but `outer_steps: true` is a mistake.
      if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
        raise ValueError(f"{field.name} must be {'an' if expected is int else 'a'} "
                         f"{expected.__name__}, got {value!r}")

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> MetaTrainConfig:
    """The config of ``values``; keys are field names (a config file, ``config.json``)."""
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
    for name, default in LATER_DEFAULTS.items():
      if identity[name] == default:
        del identity[name]  # so runs written before the setting existed still resume
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def outer_optimizer(config: MetaTrainConfig) -> optax.GradientTransformation:
  """Adam on the meta-parameters, after global-norm clipping; skips non-finite gradients.

  A non-finite meta-gradient leaves the meta-parameters and Adam's moments as
  they were, up to `MAX_NONFINITE_UPDATES` times in a row.
  """
  learning_rate = config.meta_learning_rate
  if config.schedule == "cosine":
    learning_rate = optax.cosine_decay_schedule(learning_rate, config.outer_steps)
  adam = optax.chain(optax.clip_by_global_norm(config.clip_norm), optax.adam(learning_rate))
  return optax.apply_if_finite(adam, max_consecutive_errors=MAX_NONFINITE_UPDATES)


class RunKeys:
  """The PRNG keys of a run, each derived from ``seed`` for one purpose.

  Both backends take the same keys, so they start from the same meta-parameters.
  """

  def __init__(self, seed: int):
    self._root = jax.random.PRNGKey(seed)

  @property
  def meta_init(self) -> jax.Array:
    """Initialises the meta-parameters."""
    return jax.random.fold_in(self._root, 0)

  @property
  def state_init(self) -> jax.Array:
    """Initialises the estimator's state (inner runs)."""
    return jax.random.fold_in(self._root, 1)

  def outer_step(self, step: int) -> jax.Array:
    """Randomness of outer step ``step`` (perturbations, batches, resets)."""
    return jax.random.fold_in(self._root, 2 + step)
