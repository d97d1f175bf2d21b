"""Implicit neural representations (SIRENs) of FashionMNIST images, as a weight-space dataset.

Each image is fitted by its own SIREN (Sitzmann et al. 2020): pixel
coordinates in [-1, 1]^2 -> sine layers -> grey level, all images at once
under ``vmap``. The dataset is the fitted weights, the image's class label and
the fit's PSNR; the classifiers of `evaluate.experiments.inr_classification` read it.

Scale: DWSNets fit one INR per image (60k). The defaults here (4,000 train,
500 valid, 1,000 test INRs; 2 hidden layers of 32; 100 Adam steps) build on
a 2-core CPU in about a quarter of an hour; every size is a flag.

Example:

  >>> import jax, numpy as np
  >>> image = np.outer(np.linspace(0, 1, 8), np.ones(8))[None]   # one 8x8 ramp
  >>> params, psnr = fit_images(image, steps=300, learning_rate=1e-3, seed=0)
  >>> params["layers_0"]["kernel"].shape, bool(psnr[0] > 30)
  ((1, 2, 32), True)

Build a dataset with ``unf-make-inrs --out inrs/fmnist`` (see ``--help``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pathlib
import sys
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import unf_lopt as U
from unf_lopt.atomic import atomic_open, write_atomic
from unf_lopt.tasks import chunked, command_line, xla_cpu

OMEGA = 30.0  # SIREN's frequency factor for every sine layer


def _uniform(bound: float):
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class Siren(nn.Module):
  """``sin(OMEGA * dense)`` hidden layers and a linear output, with SIREN's initialisation.

  Layers are named ``layers_0 ... layers_L`` so `unf_lopt.mlp_spec` reads the chain.
  """

  hidden: Sequence[int] = (32, 32)
  outputs: int = 1

  @nn.compact
  def __call__(self, coordinates: jax.Array) -> jax.Array:
    x = coordinates
    for index, width in enumerate(self.hidden):
      fan_in = x.shape[-1]
      bound = 1.0 / fan_in if index == 0 else math.sqrt(6.0 / fan_in) / OMEGA
      dense = nn.Dense(width, kernel_init=_uniform(bound), bias_init=_uniform(bound),
                       name=f"layers_{index}")
      x = jnp.sin(OMEGA * dense(x))
    bound = math.sqrt(6.0 / x.shape[-1]) / OMEGA
    return nn.Dense(self.outputs, kernel_init=_uniform(bound), bias_init=_uniform(bound),
                    name=f"layers_{len(self.hidden)}")(x)


def pixel_coordinates(height: int, width: int) -> jax.Array:
  """``[height * width, 2]`` row-major pixel centres in [-1, 1]^2."""
  rows, cols = jnp.meshgrid(jnp.linspace(-1, 1, height), jnp.linspace(-1, 1, width),
                            indexing="ij")
  return jnp.stack([rows, cols], axis=-1).reshape(-1, 2)


def spec(params) -> dict:
  """The true symmetry of a SIREN: hidden neurons permute, coordinates and output do not."""
  return U.mlp_spec(params, fixed_input=True, fixed_output=True)


def psnr(reconstruction: jax.Array, target: jax.Array) -> jax.Array:
  """Peak signal-to-noise ratio in dB for grey levels in [0, 1]."""
  return -10.0 * jnp.log10(jnp.mean((reconstruction - target) ** 2))


@functools.lru_cache(maxsize=4)
def _compiled_fit(hidden: tuple[int, ...], height: int, width: int, steps: int,
                  learning_rate: float):
  model = Siren(hidden)
  coordinates = pixel_coordinates(height, width)
  adam = optax.adam(learning_rate)

  def fit_one(key, image):
    target = image.reshape(-1, 1)
    params = model.init(key, coordinates)["params"]

    def reconstruction_error(p):
      return jnp.mean((model.apply({"params": p}, coordinates) - target) ** 2)

    def step(carry, _):
      params, state = carry
      grads = jax.grad(reconstruction_error)(params)
      updates, state = adam.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, adam.init(params)), None, steps)
    return params, psnr(model.apply({"params": params}, coordinates), target)

  return jax.jit(jax.vmap(fit_one))


def fit_images(images: np.ndarray, steps: int = 100, learning_rate: float = 2e-3,
               seed: int = 0, hidden: Sequence[int] = (32, 32), first_index: int = 0):
  """Fits one SIREN per image; returns stacked params and each fit's PSNR.

  Args:
    images: ``[n, height, width]`` grey levels in [0, 1].
    steps, learning_rate: full-batch Adam on the mean squared error.
    seed, first_index: image ``i`` of the call is initialised from
      ``fold_in(PRNGKey(seed), first_index + i)``, so chunks of one build do
      not depend on how the build is cut.
    hidden: hidden widths.
  """
  images = np.asarray(images, np.float32)
  if images.ndim != 3:
    raise ValueError(f"images must be [n, height, width], got shape {images.shape}")
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(
      first_index + jnp.arange(len(images)))
  fit = _compiled_fit(tuple(hidden), images.shape[1], images.shape[2], steps, learning_rate)
  return fit(keys, jnp.asarray(images))


@dataclasses.dataclass(frozen=True)
class InrConfig:
  """What to fit. Train and valid INRs come from the dataset's train split, test INRs from test."""

  dataset: str = "fashion_mnist"
  train: int = 4_000
  valid: int = 500
  test: int = 1_000
  hidden: tuple[int, ...] = (32, 32)
  steps: int = 100
  learning_rate: float = 2e-3
  seed: int = 0
  chunk_size: int = 500

  def sources(self) -> list[tuple[str, int, int]]:
    """``(image split, first image, count)`` per INR split, in the order train, valid, test."""
    return [("train", 0, self.train), ("train", self.train, self.valid), ("test", 0, self.test)]


def _images(config: InrConfig, data_dir=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Grey-level images, labels and split codes (0/1/2) of every INR to fit, in build order."""
  from unf_lopt.tasks import data  # pylint: disable=g-import-not-at-top
  images, labels, split = [], [], []
  for code, (source, start, count) in enumerate(config.sources()):
    arrays = data.load_images(config.dataset, source, data_dir)
    if start + count > len(arrays["image"]):
      raise ValueError(f"{config.dataset} {source} has {len(arrays['image'])} images; "
                       f"{start + count} are needed")
    chosen = arrays["image"][start:start + count]
    images.append(chosen.mean(axis=-1) / 255.0)  # grey level; FashionMNIST has one channel
    labels.append(arrays["label"][start:start + count])
    split.append(np.full(count, code, np.int8))
  return (np.concatenate(images).astype(np.float32), np.concatenate(labels).astype(np.int32),
          np.concatenate(split))


def build(config: InrConfig, out: os.PathLike | str, data_dir=None,
          quiet: bool = False) -> pathlib.Path:
  """Fits every INR (resumable, chunk by chunk), then writes ``inrs.npz`` and ``spec.json``."""
  out = pathlib.Path(out)
  chunked.record_config(out, dataclasses.asdict(config), "INRs")
  images, labels, split = _images(config, data_dir)
  starts = list(range(0, len(images), config.chunk_size))

  def fit_chunk(number):
    start = starts[number]
    params, fit_psnr = fit_images(images[start:start + config.chunk_size], config.steps,
                                  config.learning_rate, config.seed, config.hidden, start)
    return {"psnr": fit_psnr, **{f"params/{k}": v for k, v in chunked.flatten_tree(params).items()}}

  sizes = [min(config.chunk_size, len(images) - start) for start in starts]
  paths = chunked.build_chunks(out / "chunks", sizes, fit_chunk, "fitting INRs", "INR", quiet)
  arrays = chunked.load_chunks(paths)
  path = out / "inrs.npz"
  with atomic_open(path) as handle:
    np.savez(handle, label=labels, split=split, **arrays)
  params = chunked.unflatten_tree({k[len("params/"):]: v[0] for k, v in arrays.items()
                                   if k.startswith("params/")})
  write_atomic(out / "spec.json", json.dumps(spec(params), indent=1))
  return path


def load_inrs(path: os.PathLike | str) -> dict:
  """``{"params": nested [N, ...] arrays, "label", "split", "psnr"}`` of an ``inrs.npz``."""
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(
        f"{path} does not exist; build it with unf-make-inrs --out {path.parent}")
  with np.load(path, allow_pickle=False) as stored:
    flat = {k[len("params/"):]: stored[k] for k in stored.files if k.startswith("params/")}
    out = {k: stored[k] for k in stored.files if not k.startswith("params/")}
  missing = {"label", "split", "psnr"} - set(out)
  if missing or not flat:
    raise ValueError(f"{path} is not an INR dataset of unf-make-inrs (missing {sorted(missing)})")
  out["params"] = chunked.unflatten_tree(flat)
  return out


def build_parser() -> command_line.CommandParser:
  defaults = InrConfig()
  cl = command_line
  parser = cl.CommandParser(prog="unf-make-inrs", description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, type=cl.output_directory,
                      help="build directory (resumed if it holds a build of the same settings)")
  parser.add_argument("--train", type=cl.positive_int, default=defaults.train,
                      help="training INRs (from the dataset's train split)")
  parser.add_argument("--valid", type=cl.positive_int, default=defaults.valid,
                      help="validation INRs (the train-split images after the training ones)")
  parser.add_argument("--test", type=cl.positive_int, default=defaults.test,
                      help="test INRs (from the dataset's test split)")
  parser.add_argument("--hidden", type=cl.positive_int, nargs="+", default=list(defaults.hidden),
                      help="hidden widths of each SIREN")
  parser.add_argument("--steps", type=cl.positive_int, default=defaults.steps,
                      help="full-batch Adam steps per image")
  parser.add_argument("--learning-rate", type=cl.positive_float, default=defaults.learning_rate,
                      help="Adam learning rate of the fits")
  parser.add_argument("--chunk-size", type=cl.positive_int, default=defaults.chunk_size,
                      help="images fitted together under vmap (and saved per chunk)")
  parser.add_argument("--seed", type=cl.non_negative_int, default=defaults.seed,
                      help="seed of the SIREN initialisations")
  parser.add_argument("--data-dir", type=cl.existing_directory, default=None,
                      help="tfds data directory (default: unf-data's)")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  return parser


def main(argv=None) -> int:
  xla_cpu.avoid_thread_pool_hang()
  parser = build_parser()
  args = parser.parse_args(argv)
  config = InrConfig(train=args.train, valid=args.valid, test=args.test,
                     hidden=tuple(args.hidden), steps=args.steps,
                     learning_rate=args.learning_rate, seed=args.seed, chunk_size=args.chunk_size)
  try:
    _images(config, args.data_dir)  # the images exist and suffice: checked before any fit
  except FileNotFoundError as error:  # the dataset is not prepared
    parser.fail("--data-dir", error)
  except ValueError as error:  # too few images for --train + --valid, or for --test
    parser.fail("--test" if f"{config.dataset} test " in str(error) else "--train", error)
  try:
    chunked.record_config(args.out, dataclasses.asdict(config), "INRs")
  except ValueError as error:
    parser.fail("--out", error)
  path = build(config, args.out, args.data_dir, args.quiet)
  psnr_values = load_inrs(path)["psnr"]
  print(f"INRs written to {path}: PSNR {psnr_values.mean():.1f} dB mean, "
        f"{np.percentile(psnr_values, 5):.1f} dB 5th percentile")
  return 0


if __name__ == "__main__":
  sys.exit(main())
