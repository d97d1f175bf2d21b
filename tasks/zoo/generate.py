"""Builds a zoo of seq2seq GRU models on addition, each with its own learning rate and batch size.

Model ``i`` is fully determined by ``(seed, i)``: its learning rate
(log-uniform in [1e-4, 1e-2]), batch size (from {64, 128, 256}), initial
weights and data stream. Models with the same batch size are trained together
under ``vmap`` in chunks; each finished chunk is written atomically to
``chunks/``, so an interrupted build resumes where it stopped and gives the
same zoo. ``assemble`` gathers the chunks into ``zoo.npz``: every parameter
tensor stacked over models (keys are tensor paths, e.g. ``encoder/hn/kernel``),
``learning_rate``, ``batch_size``, ``success_rate`` (exact-match completion on
a fixed test set of problems) and ``split`` (0 train, 1 valid, 2 test), plus
``spec.json``.

Usage:
  unf-make-zoo --out zoo/full                                 # paper: 10,000 models, hidden 128
  unf-make-zoo --out zoo/small --num-models 1000 --hidden 32 --train-steps 400
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from unf_lopt.atomic import atomic_open, write_atomic
from unf_lopt.tasks import chunked, command_line, xla_cpu
from unf_lopt.tasks.zoo import addition

BATCH_SIZES = (64, 128, 256)


@dataclasses.dataclass(frozen=True)
class ZooConfig:
  """Settings of a zoo build.

  Defaults are the Tiny RNN Zoo of the UNF paper (Zhou et al. 2024, Section 4.1):
  10,000 GRU models of hidden size 128, learning rates log-uniform in
  [1e-4, 1e-2], an 8,000 / 1,000 / 1,000 split. The paper does not state the
  training length.
  """

  num_models: int = 10_000
  hidden: int = 128
  embed_dim: int = 16
  max_digits: int = addition.MAX_DIGITS
  train_steps: int = 1_000
  learning_rate_range: tuple[float, float] = (1e-4, 1e-2)
  test_problems: int = 1_000
  split: tuple[int, int, int] = (8_000, 1_000, 1_000)
  seed: int = 0
  chunk_size: int = 250

  def __post_init__(self):
    if sum(self.split) != self.num_models:
      raise ValueError(f"split {self.split} does not add up to num_models={self.num_models}")

  @classmethod
  def scaled(cls, num_models: int, **overrides) -> "ZooConfig":
    """A config with the paper's 80/10/10 split for ``num_models``."""
    valid = test = num_models // 10
    return cls(num_models=num_models, split=(num_models - valid - test, valid, test), **overrides)


def hyperparameters(config: ZooConfig) -> tuple[np.ndarray, np.ndarray]:
  """Learning rates and batch sizes of all models (each from its own key)."""
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(config.seed), i))(
      jnp.arange(config.num_models))
  low, high = (math.log(x) for x in config.learning_rate_range)

  def sample(key):
    lr_key, bs_key = jax.random.split(jax.random.fold_in(key, 1))
    return (jnp.exp(jax.random.uniform(lr_key, (), minval=low, maxval=high)),
            jax.random.randint(bs_key, (), 0, len(BATCH_SIZES)))

  rates, choices = jax.vmap(sample)(keys)
  return np.asarray(rates, np.float32), np.asarray(BATCH_SIZES)[np.asarray(choices)]


def _model_key(config: ZooConfig, index) -> jax.Array:
  return jax.random.fold_in(jax.random.PRNGKey(config.seed), index)


def train_chunk(config: ZooConfig, indices: np.ndarray, batch_size: int):
  """Trains the models ``indices`` (all of batch size ``batch_size``) under vmap.

  Returns their parameters (stacked) and test success rates.
  """
  rates, _ = hyperparameters(config)
  indices = jnp.asarray(indices)
  return _compiled_trainer(config, batch_size)(indices, jnp.asarray(rates)[indices])


@functools.lru_cache(maxsize=8)
def _compiled_trainer(config: ZooConfig, batch_size: int):
  """One jitted, vmapped trainer per (config, batch size), reused across chunks."""
  model = addition.Seq2SeqGRU(config.hidden, config.embed_dim)
  adam = optax.scale_by_adam()
  test_inputs, test_targets = addition.sample_problems(
      jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), 2**20), config.test_problems,
      config.max_digits)

  def train_one(index, learning_rate):
    key = _model_key(config, index)
    init_key, data_key = jax.random.split(jax.random.fold_in(key, 2))
    sample_inputs, sample_targets = addition.sample_problems(init_key, 2, config.max_digits)
    params = model.init(init_key, sample_inputs, sample_targets)["params"]

    def step(carry, t):
      params, state = carry
      inputs, targets = addition.sample_problems(jax.random.fold_in(data_key, t), batch_size,
                                                  config.max_digits)
      grads = jax.grad(lambda p: addition.loss(model, p, inputs, targets))(params)
      updates, state = adam.update(grads, state)
      params = jax.tree.map(lambda p, u: p - learning_rate * u, params, updates)
      return (params, state), None

    (params, _), _ = jax.lax.scan(step, (params, adam.init(params)), jnp.arange(config.train_steps))
    return params, addition.success_rate(model, params, test_inputs, test_targets)

  return jax.jit(jax.vmap(train_one))


def _chunks(config: ZooConfig) -> list[tuple[int, np.ndarray, int]]:
  _, batch_sizes = hyperparameters(config)
  plan = []
  for batch_size in BATCH_SIZES:
    members = np.flatnonzero(batch_sizes == batch_size)
    for start in range(0, len(members), config.chunk_size):
      plan.append((batch_size, members[start:start + config.chunk_size]))
  return [(number, indices, batch_size) for number, (batch_size, indices) in enumerate(plan)]


def build(config: ZooConfig, out: os.PathLike | str, quiet: bool = False) -> pathlib.Path:
  """Trains every missing chunk, then assembles ``zoo.npz``; returns its path."""
  out = pathlib.Path(out)
  chunked.record_config(out, dataclasses.asdict(config), "a zoo")
  plan = _chunks(config)

  def train(number):
    _, indices, batch_size = plan[number]
    params, success = train_chunk(config, indices, batch_size)
    return {"index": indices, "success_rate": success, **chunked.flatten_tree(params)}

  chunked.build_chunks(out / "chunks", [len(indices) for _, indices, _ in plan], train,
                       "training zoo", "model", quiet)
  return assemble(config, out)


def assemble(config: ZooConfig, out: pathlib.Path) -> pathlib.Path:
  rates, batch_sizes = hyperparameters(config)
  plan = _chunks(config)
  arrays = chunked.load_chunks([chunked.chunk_path(out / "chunks", n) for n, _, _ in plan])
  index = arrays.pop("index")
  if not np.array_equal(np.sort(index), np.arange(config.num_models)):
    raise ValueError(f"the chunks in {out / 'chunks'} do not hold models 0..{config.num_models - 1}"
                     " once each; delete the directory and build again")
  success = np.zeros(config.num_models, np.float32)
  success[index] = arrays.pop("success_rate")
  tensors = {key: np.zeros_like(value) for key, value in arrays.items()}
  for key, value in arrays.items():
    tensors[key][index] = value
  order = np.random.default_rng(config.seed).permutation(config.num_models)
  split = np.zeros(config.num_models, np.int8)
  train, valid, _ = config.split
  split[order[train:train + valid]] = 1
  split[order[train + valid:]] = 2
  path = out / "zoo.npz"
  with atomic_open(path) as handle:
    np.savez(handle, learning_rate=rates, batch_size=batch_sizes, success_rate=success,
             split=split, **{f"params/{k}": v for k, v in tensors.items()})
  write_atomic(out / "spec.json", json.dumps(addition.spec(), indent=1))
  return path


def load_zoo(path: os.PathLike | str) -> dict:
  """A zoo.npz as ``{"params": nested [N, ...] arrays, "success_rate", "learning_rate",
  "batch_size", "split"}``."""
  with np.load(path, allow_pickle=False) as zoo:
    flat = {k[len("params/"):]: zoo[k] for k in zoo.files if k.startswith("params/")}
    out = {k: zoo[k] for k in zoo.files if not k.startswith("params/")}
  out["params"] = chunked.unflatten_tree(flat)
  return out


# Operands are drawn as int32: 10**9 is the largest power of ten below 2**31.
LARGEST_MAX_DIGITS = 9
# The 80/10/10 split gives the valid and test splits at least one model from here on.
SMALLEST_ZOO = 10


def build_parser() -> command_line.CommandParser:
  defaults = ZooConfig()
  parser = command_line.CommandParser(prog="unf-make-zoo", description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, type=command_line.output_directory,
                      help="build directory (resumed if it holds a build of the same settings)")
  parser.add_argument("--num-models", type=command_line.positive_int, default=defaults.num_models,
                      help=f"models in the zoo, split 80/10/10 (at least {SMALLEST_ZOO})")
  parser.add_argument("--hidden", type=command_line.positive_int, default=defaults.hidden,
                      help="GRU hidden size")
  parser.add_argument("--embed-dim", type=command_line.positive_int, default=defaults.embed_dim,
                      help="token embedding size")
  parser.add_argument("--max-digits", type=command_line.positive_int, default=defaults.max_digits,
                      help=f"operands have 1 to this many digits (paper: 5; at most "
                      f"{LARGEST_MAX_DIGITS})")
  parser.add_argument("--train-steps", type=command_line.positive_int,
                      default=defaults.train_steps, help="Adam steps per model")
  parser.add_argument("--test-problems", type=command_line.positive_int,
                      default=defaults.test_problems,
                      help="fixed test problems that measure each model's success rate")
  parser.add_argument("--chunk-size", type=command_line.positive_int, default=defaults.chunk_size,
                      help="models trained together under vmap (and saved per chunk)")
  parser.add_argument("--seed", type=command_line.non_negative_int, default=defaults.seed,
                      help="seed of the hyperparameters, inits, data and split")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  return parser


def main(argv=None) -> int:
  xla_cpu.avoid_thread_pool_hang()
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.num_models < SMALLEST_ZOO:
    parser.fail("--num-models", f"{args.num_models} leaves the valid or test split empty; "
                f"give at least {SMALLEST_ZOO}")
  if args.max_digits > LARGEST_MAX_DIGITS:
    parser.fail("--max-digits", f"{args.max_digits} exceeds {LARGEST_MAX_DIGITS} (int32 operands)")
  config = ZooConfig.scaled(args.num_models, hidden=args.hidden, embed_dim=args.embed_dim,
                            max_digits=args.max_digits,
                            train_steps=args.train_steps, test_problems=args.test_problems,
                            chunk_size=args.chunk_size, seed=args.seed)
  try:
    # Refuses, before any training, a directory that holds a build of other settings.
    chunked.record_config(args.out, dataclasses.asdict(config), "a zoo")
  except ValueError as error:
    parser.fail("--out", error)
  path = build(config, args.out, args.quiet)
  print(f"zoo written to {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
