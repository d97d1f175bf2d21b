"""Truncated persistent evolution strategies (PES; Vicol, Metz & Sohl-Dickstein 2021).

``num_runs`` inner runs train in parallel. Each run holds two particles, the
inner states unrolled with ``theta + eps`` and ``theta - eps`` (antithetic).
An outer step draws a fresh ``eps ~ N(0, sigma^2)`` per run, unrolls both
particles ``trunc_length`` steps on the same batches, and adds ``eps`` to the
run's accumulator ``xi`` (the sum of the perturbations since its episode
began). The run's estimate is ``xi * (L+ - L-) / (2 sigma^2)``, with ``L`` the
meta-loss of the truncation: unbiased for the gradient of the (smoothed) sum
of truncation meta-losses over the whole episode, with memory independent of
the horizon.

Episodes last ``horizon`` steps rounded up to a multiple of ``trunc_length``,
so resets (new init from a new key, ``xi = 0``) happen between truncations.
With ``random_offset`` each run's first episode is shorter by a random number
of truncations, which de-synchronises the runs. A run whose losses or updates
are not finite contributes nothing, is reset and is counted.

The run axis can be sharded over devices (``mesh``): each device unrolls its
share of the runs, and the average over runs is a cross-device reduction. The
devices may belong to several processes (`meta_train.distributed`). Where the
training split stays in host memory (`meta_train.inner.InnerProblem.streams`),
the rows of every batch are drawn on the devices, and each process gathers the
batches of its own runs on the host and hands them to the compiled step.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from unf_lopt.meta_train.inner import InnerProblem

PyTree = Any
RUN_AXIS = "runs"


@flax.struct.dataclass
class PESState:
  """Per-run state; every leaf has a leading ``num_runs`` axis.

  Attributes:
    particles: inner optimizer states with a second axis of 2 (``+eps``, ``-eps``).
    accumulator: sum of the run's perturbations since its episode began (meta-params shape).
    steps_left: inner steps until the episode ends.
    episodes: episodes the run has started (seeds its next initialisation).
  """

  particles: PyTree
  accumulator: PyTree
  steps_left: jax.Array
  episodes: jax.Array


@dataclasses.dataclass(frozen=True)
class PESConfig:
  """Settings of the estimator.

  Defaults are the UNF paper's (Zhou et al. 2024, Appendix B.2): 16 runs,
  truncation 50, perturbation standard deviation 0.01.
  """

  num_runs: int = 16
  trunc_length: int = 50
  horizon: int = 2000
  sigma: float = 0.01
  meta_loss: str = "mean"  # "mean" over the truncation's steps, or "final" step
  random_offset: bool = True

  def __post_init__(self):
    if self.num_runs < 1 or self.trunc_length < 1 or self.horizon < 1:
      raise ValueError(f"num_runs, trunc_length and horizon must be positive: {self}")
    if self.sigma <= 0:
      raise ValueError(f"sigma must be positive, got {self.sigma}")
    if self.meta_loss not in ("mean", "final"):
      raise ValueError(f"meta_loss must be 'mean' or 'final', got {self.meta_loss!r}")

  @property
  def truncations_per_episode(self) -> int:
    return math.ceil(self.horizon / self.trunc_length)

  @property
  def episode_length(self) -> int:
    return self.truncations_per_episode * self.trunc_length


def perturbation(meta: PyTree, key: jax.Array, sigma: float) -> PyTree:
  """``eps ~ N(0, sigma^2 I)`` shaped like ``meta`` (one key per leaf, in tree order)."""
  leaves, treedef = jax.tree.flatten(meta)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(treedef, [sigma * jax.random.normal(k, jnp.shape(m), jnp.result_type(m))
                                      for k, m in zip(keys, leaves)])


def run_keys(key: jax.Array, num_runs: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-run ``(noise, data, init)`` keys of one outer step's ``key``.

  The data key of a run seeds its batches: step ``i`` uses ``fold_in(data, i)``;
  the init key seeds a reset: episode ``e`` uses ``fold_in(init, e)``.
  """
  keys = jax.vmap(lambda k: jax.random.split(k, 3))(jax.random.split(key, num_runs))
  return keys[:, 0], keys[:, 1], keys[:, 2]


class TruncatedPES:
  """The PES gradient estimator for a learned optimizer on an inner problem.

  Args:
    lopt: a learned optimizer (``init``, ``opt_fn(meta) -> init/update/get_params``).
    problem: the inner problem.
    config: estimator settings.
    mesh: optional 1-axis ``Mesh`` named ``"runs"``; the runs are sharded over
      its devices (``num_runs`` must be a multiple of their number).

  Example:

    >>> import jax, jax.numpy as jnp
    >>> import unf_lopt as U
    >>> from unf_lopt.meta_train.inner import InnerProblem
    >>> problem = InnerProblem(
    ...     "quadratic", init=lambda key: {"w": jax.random.normal(key, (3,))},
    ...     loss=lambda p, batch: jnp.sum(p["w"] ** 2), sample_batch=lambda data, key: {})
    >>> pes = TruncatedPES(U.NominalLOpt("sgdm"), problem,
    ...                    PESConfig(num_runs=4, trunc_length=5, horizon=20))
    >>> meta = pes.lopt.init(jax.random.PRNGKey(0))
    >>> state = pes.init_state(meta, jax.random.PRNGKey(1))
    >>> grad, state, metrics = pes.estimate(meta, state, jax.random.PRNGKey(2))
    >>> sorted(grad), int(metrics["blowups"])
    (['log_alpha', 'logit_g0'], 0)
  """

  def __init__(self, lopt, problem: InnerProblem, config: PESConfig = PESConfig(),
               mesh: Mesh | None = None):
    self.lopt = lopt
    self.problem = problem
    self.config = config
    self.mesh = mesh
    if mesh is not None:
      if mesh.axis_names != (RUN_AXIS,):
        raise ValueError(f"the mesh must have one axis named {RUN_AXIS!r}, got {mesh.axis_names}")
      if config.num_runs % mesh.size:
        raise ValueError(f"num_runs={config.num_runs} is not a multiple of the "
                         f"{mesh.size} devices of the mesh")
    self._estimate = jax.jit(self._estimate_impl)
    self._init_state = jax.jit(self._init_state_impl)
    self._batch_rows = jax.jit(self._batch_rows_impl)

  # -- sharding -------------------------------------------------------------

  def _shard_runs(self, tree: PyTree) -> PyTree:
    if self.mesh is None:
      return tree
    sharding = NamedSharding(self.mesh, PartitionSpec(RUN_AXIS))
    return jax.lax.with_sharding_constraint(tree, sharding)

  def _replicate(self, tree: PyTree) -> PyTree:
    if self.mesh is None:
      return tree
    return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec()))

  # -- state ----------------------------------------------------------------

  def _fresh_particles(self, meta: PyTree, key: jax.Array) -> PyTree:
    params = self.problem.init(key)
    state = self.lopt.opt_fn(meta).init(params, num_steps=self.config.episode_length)
    return jax.tree.map(lambda x: jnp.stack([x, x]), state)

  def _init_state_impl(self, meta: PyTree, key: jax.Array) -> PESState:
    config = self.config
    init_keys, offset_key = jax.random.split(key)
    keys = self._shard_runs(jax.random.split(init_keys, config.num_runs))
    particles = jax.vmap(lambda k: self._fresh_particles(meta, k))(keys)
    if config.random_offset:
      offsets = jax.random.randint(offset_key, (config.num_runs,), 0,
                                   config.truncations_per_episode)
    else:
      offsets = jnp.zeros((config.num_runs,), jnp.int32)
    steps_left = (config.truncations_per_episode - offsets) * config.trunc_length
    accumulator = jax.tree.map(lambda m: jnp.zeros((config.num_runs, *jnp.shape(m)), m.dtype),
                               meta)
    return self._shard_runs(PESState(particles=particles, accumulator=accumulator,
                                     steps_left=steps_left.astype(jnp.int32),
                                     episodes=jnp.ones((config.num_runs,), jnp.int32)))

  def init_state(self, meta: PyTree, key: jax.Array) -> PESState:
    """Fresh runs (first episode shortened by a random offset if configured)."""
    return self._init_state(self._replicate(meta), key)

  # -- one truncation -------------------------------------------------------

  def _unroll(self, signed_meta: PyTree, particles: PyTree, data_key: jax.Array, data: PyTree,
              batches: PyTree | None = None):
    """Both particles ``trunc_length`` steps on shared batches; losses ``[steps, 2]``.

    ``batches`` (leading axis: step), where given, replaces drawing from ``data``.
    """
    problem = self.problem

    def particle_step(meta, state, batch):
      return problem.train_step(self.lopt.opt_fn(meta), state, batch)

    def step(particles, index_and_batch):
      index, batch = index_and_batch
      if batch is None:
        batch = problem.sample_batch(data, jax.random.fold_in(data_key, index))
      particles, losses = jax.vmap(particle_step, in_axes=(0, 0, None))(
          signed_meta, particles, batch)
      return particles, losses

    return jax.lax.scan(step, particles, (jnp.arange(self.config.trunc_length), batches))

  def _run(self, meta: PyTree, run: PESState, noise_key, data_key, init_key, data: PyTree,
           batches: PyTree | None = None):
    """One run's truncation: its gradient estimate, next state and statistics."""
    config = self.config
    eps = perturbation(meta, noise_key, config.sigma)
    signed_meta = jax.tree.map(lambda m, e: jnp.stack([m + e, m - e]), meta, eps)
    skipped_before = run.particles.skipped_steps
    particles, losses = self._unroll(signed_meta, run.particles, data_key, data, batches)
    normalized = self.problem.normalizer(losses)
    meta_losses = normalized.mean(0) if config.meta_loss == "mean" else normalized[-1]
    finite = (jnp.all(jnp.isfinite(normalized))
              & jnp.all(particles.skipped_steps == skipped_before))
    accumulator = jax.tree.map(jnp.add, run.accumulator, eps)
    scale = jnp.where(finite, (meta_losses[0] - meta_losses[1]) / (2 * config.sigma ** 2), 0.0)
    gradient = jax.tree.map(lambda xi: scale * xi, accumulator)

    steps_left = run.steps_left - config.trunc_length
    done = (steps_left <= 0) | ~finite
    fresh = self._fresh_particles(meta, jax.random.fold_in(init_key, run.episodes))
    next_run = PESState(
        particles=jax.tree.map(lambda f, p: jnp.where(done, f, p), fresh, particles),
        accumulator=jax.tree.map(lambda a: jnp.where(done, jnp.zeros_like(a), a), accumulator),
        steps_left=jnp.where(done, config.episode_length, steps_left),
        episodes=run.episodes + done.astype(jnp.int32))
    stats = {"meta_loss": jnp.where(finite, meta_losses.mean(), 0.0),
             "finite": finite, "reset": done}
    return gradient, next_run, stats

  def _estimate_impl(self, meta, state, key, data, batches=None):
    keys = self._shard_runs(run_keys(key, self.config.num_runs))
    state = self._shard_runs(state)
    gradients, next_state, stats = jax.vmap(self._run, in_axes=(None, 0, 0, 0, 0, None, 0))(
        meta, state, *keys, data, self._shard_runs(batches))
    num_finite = stats["finite"].sum()
    denominator = jnp.maximum(num_finite, 1).astype(jnp.float32)
    gradient = jax.tree.map(lambda g: g.sum(0) / denominator, gradients)
    metrics = {"meta_loss": stats["meta_loss"].sum() / denominator,
               "resets": stats["reset"].sum(),
               "blowups": self.config.num_runs - num_finite}
    return gradient, self._shard_runs(next_state), metrics

  def estimate(self, meta: PyTree, state: PESState, key: jax.Array):
    """``(gradient estimate, next state, metrics)`` for one truncation of every run.

    ``metrics``: ``meta_loss`` (mean over finite runs and both particles),
    ``resets`` (runs that start a new episode next), ``blowups`` (runs with
    non-finite losses or skipped steps; excluded and reset).
    """
    return self._estimate(*self._estimate_args(meta, state, key))

  def _estimate_args(self, meta: PyTree, state: PESState, key: jax.Array) -> tuple:
    if self.problem.streams:
      return self._replicate(meta), state, key, {}, self._host_batches(key)
    return self._replicate(meta), state, key, self._replicate(self.problem.data)

  def estimate_memory(self, meta: PyTree, state: PESState, key: jax.Array) -> dict[str, int]:
    """XLA's memory plan of one :meth:`estimate` call, in bytes (compiles, runs nothing).

    ``arguments`` (meta-parameters, PES state, data on the device), ``outputs``,
    ``temporaries`` (the truncation's working memory) and ``peak`` (their sum
    less the outputs that reuse argument buffers). None of them depends on
    the horizon: a truncation holds ``trunc_length`` steps of state, not a run.
    """
    analysis = self._estimate.lower(*self._estimate_args(meta, state, key)).compile(
    ).memory_analysis()
    sizes = {"arguments": int(analysis.argument_size_in_bytes),
             "outputs": int(analysis.output_size_in_bytes),
             "temporaries": int(analysis.temp_size_in_bytes),
             "aliased": int(analysis.alias_size_in_bytes)}
    sizes["peak"] = (sizes["arguments"] + sizes["outputs"] + sizes["temporaries"]
                     - sizes["aliased"])
    return sizes

  # -- batches from host memory ---------------------------------------------

  def _batch_rows_impl(self, key: jax.Array) -> jax.Array:
    """Rows ``[num_runs, trunc_length, batch]`` of host data: the ones ``sample_batch`` takes."""
    data_keys = self._shard_runs(run_keys(key, self.config.num_runs)[1])
    steps = jnp.arange(self.config.trunc_length)
    rows = jax.vmap(lambda k: jax.vmap(
        lambda i: self.problem.batch_rows(jax.random.fold_in(k, i)))(steps))(data_keys)
    return self._shard_runs(rows)

  def _host_batches(self, key: jax.Array) -> PyTree:
    """Every run's batches of one truncation, gathered on the host by the process holding it."""
    rows = self._batch_rows(key)
    host = self.problem.host_data
    if self.mesh is None:
      indices = np.asarray(rows)
      return {name: jnp.asarray(values[indices]) for name, values in host.items()}
    sharding = NamedSharding(self.mesh, PartitionSpec(RUN_AXIS))
    shards = [(shard.device, np.asarray(shard.data)) for shard in rows.addressable_shards]
    batches = {}
    for name, values in host.items():
      pieces = [jax.device_put(values[indices], device) for device, indices in shards]
      batches[name] = jax.make_array_from_single_device_arrays(
          (*rows.shape, *values.shape[1:]), sharding, pieces)
    return batches


def run_mesh(devices=None) -> Mesh:
  """A 1-axis mesh named ``"runs"`` over ``devices`` (default: all devices of all processes)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (RUN_AXIS,))
