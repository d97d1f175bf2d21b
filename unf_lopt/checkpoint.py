"""Saving and loading learned optimizers: a self-describing directory, no pickle.

A checkpoint is a directory holding

* ``optimizer.json``: the format tag and version, the optimizer kind, its
  options (architecture, ``momentum``, ``feature_normalization``,
  ``initial_beta``: `unf_lopt.NominalLOpt.options`), its weight-space spec,
  free-form ``metadata``, the versions that wrote it, and the SHA-256 of the
  parameter file;
* ``meta_params.msgpack``: the meta-parameters (``flax.serialization``'s
  msgpack encoding of plain arrays, which cannot run code when read).

It is written to a staging sibling directory, fsynced and renamed into place
(:func:`unf_lopt.atomic.atomic_directory`), so a crash mid-write leaves the
previous checkpoint intact. Loading checks the tag, the version and the
checksum, and raises :class:`CheckpointError` naming the file for anything
truncated, corrupted or foreign.

Format versions: 1 has no ``momentum`` / ``feature_normalization`` /
``initial_beta`` / ``max_folded_size`` / ``tensor_pairs`` / ``nfn_head_bias``
(they load as what such checkpoints were trained with: the defaults of the
first three, ``max_folded_size=None``, every fixed axis folded,
``tensor_pairs="all"`` and an ``nfn`` head with a bias). ``identity_share``,
like ``initial_beta``, only sets initial meta-parameters: any version may
carry it, and a reader that does not know it loses nothing.
An optimizer whose momentum or feature normalisation is not the default, or
whose ``unf`` head differs from the legacy one on its weight space (a fixed
axis beyond ``max_folded_size``, or ``tensor_pairs="linked"``), or an ``nfn``
head without a bias, is written as
version 2, which an unf-lopt too old to know the options refuses instead of
running it with the wrong features or network; every other checkpoint is
still written as version 1.

Example:
  >>> import tempfile, jax, unf_lopt
  >>> lopt = unf_lopt.NominalLOpt("sgdm")
  >>> path = tempfile.mkdtemp() + "/sgdm"
  >>> save_checkpoint(path, lopt, lopt.init(jax.random.PRNGKey(0)), metadata={"task": "demo"})
  >>> restored, meta_params = load_checkpoint(path)
  >>> restored.update_net, sorted(meta_params)
  ('sgdm', ['log_alpha', 'logit_g0'])
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax
import flax.serialization
import jax
import numpy as np

from unf_lopt.atomic import atomic_directory
from unf_lopt.layers.engine import large_fixed_positions
from unf_lopt.optimizer import INITIAL_BETA, NominalLOpt
from unf_lopt.spec import tensor_infos

PyTree = Any
FORMAT = "unf-lopt-checkpoint"
FORMAT_VERSION = 1  # what an optimizer with the default momentum and features is written as
OPTIONS_FORMAT_VERSION = 2  # a non-default momentum or feature normalisation
READABLE_VERSIONS = (FORMAT_VERSION, OPTIONS_FORMAT_VERSION)
# What a version-1 checkpoint, written before the options existed, was trained with.
DEFAULT_OPTIONS = {"momentum": "accumulate", "feature_normalization": "per_channel",
                   "initial_beta": INITIAL_BETA, "max_folded_size": None, "tensor_pairs": "all",
                   "nfn_head_bias": True, "identity_share": None}
# The options that change the update rule, not only the initial meta-parameters.
_RULE_OPTIONS = ("momentum", "feature_normalization")
CONFIG_FILE = "optimizer.json"
PARAMS_FILE = "meta_params.msgpack"


class CheckpointError(ValueError):
  """A checkpoint is missing, truncated, corrupted or not ours."""


def _spec_to_json(spec: PyTree, where: str = "spec") -> Any:
  if isinstance(spec, Mapping):
    return {str(k): _spec_to_json(v, f"{where}/{k}") for k, v in spec.items()}
  if isinstance(spec, tuple):
    for name in spec:
      if not (name is None or isinstance(name, (str, int))):
        raise CheckpointError(f"cannot store axis name {name!r} at '{where}': checkpoints keep "
                              "str, int or None names")
    return list(spec)
  raise CheckpointError(f"cannot store spec node of type {type(spec).__name__} at '{where}'; "
                        "checkpoints keep specs made of dicts and axis tuples")


def _spec_from_json(node: Any) -> PyTree:
  if isinstance(node, dict):
    return {k: _spec_from_json(v) for k, v in node.items()}
  return tuple(node)


def _stored_spec(lopt: NominalLOpt) -> Any:
  if lopt.spec == "infer" and lopt.apply_fn is not None and lopt.params_like is not None:
    # Inferred from the model's apply function, which is not stored: store its result.
    return _spec_to_json(lopt.resolve_spec(lopt.params_like))
  if lopt.spec is None or lopt.spec == "infer":
    return lopt.spec
  if callable(lopt.spec):
    if lopt.params_like is None:
      raise CheckpointError("the optimizer's spec is a function; give the NominalLOpt "
                            "params_like=... so the resolved spec can be stored")
    return _spec_to_json(lopt.resolve_spec(lopt.params_like))
  return _spec_to_json(lopt.spec)


def _changes_the_network(lopt: NominalLOpt) -> bool:
  """Whether ``lopt``'s update net differs from the legacy one an old reader would build."""
  if lopt.update_net == "nfn":
    return lopt.nfn_head_bias != DEFAULT_OPTIONS["nfn_head_bias"]
  if lopt.update_net != "unf":
    return False  # only the unf and nfn heads take the options
  if lopt.tensor_pairs != DEFAULT_OPTIONS["tensor_pairs"]:
    return True
  if lopt.max_folded_size is None:
    return False
  if lopt.params_like is None:
    return True  # the sizes of the fixed axes are unknown: assume it matters
  infos, _ = tensor_infos(lopt.resolve_spec(lopt.params_like), lopt.params_like)
  return any(large_fixed_positions(info, lopt.max_folded_size) for info in infos)


def save_checkpoint(path: str | os.PathLike, lopt: NominalLOpt, meta_params: PyTree,
                    metadata: Mapping[str, Any] | None = None) -> None:
  """Writes ``lopt`` and ``meta_params`` to the directory ``path``, atomically."""
  path = Path(path)
  payload = flax.serialization.msgpack_serialize(
      jax.tree.map(np.asarray, flax.serialization.to_state_dict(meta_params)))
  options = lopt.options()
  changes_the_rule = (any(options[name] != DEFAULT_OPTIONS[name] for name in _RULE_OPTIONS)
                      or _changes_the_network(lopt))
  config = {
      "format": FORMAT,
      "format_version": OPTIONS_FORMAT_VERSION if changes_the_rule else FORMAT_VERSION,
      "update_net": lopt.update_net, **options,
      "spec": _stored_spec(lopt), "metadata": dict(metadata or {}),
      "versions": {"jax": jax.__version__, "flax": flax.__version__, "numpy": np.__version__},
      "meta_params_sha256": hashlib.sha256(payload).hexdigest(),
  }
  text = json.dumps(config, indent=2, sort_keys=True)
  with atomic_directory(path) as staging:
    (staging / PARAMS_FILE).write_bytes(payload)
    (staging / CONFIG_FILE).write_text(text)


def load_checkpoint(path: str | os.PathLike) -> tuple[NominalLOpt, PyTree]:
  """Reads a checkpoint written by :func:`save_checkpoint`.

  Returns:
    The optimizer and its meta-parameters.

  Raises:
    CheckpointError: naming the file when it is missing, truncated, corrupted
      or was not written by unf-lopt.
  """
  path = Path(path)
  config_path, params_path = path / CONFIG_FILE, path / PARAMS_FILE
  if not config_path.is_file() or not params_path.is_file():
    raise CheckpointError(f"'{path}' is not an unf-lopt checkpoint: expected {CONFIG_FILE} and "
                          f"{PARAMS_FILE} inside it")
  try:
    config = json.loads(config_path.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError) as error:
    raise CheckpointError(f"'{config_path}' is not valid JSON ({error}); the checkpoint is "
                          "truncated or corrupted") from error
  if not isinstance(config, dict) or config.get("format") != FORMAT:
    raise CheckpointError(f"'{config_path}' is not an unf-lopt checkpoint (format tag missing)")
  if config.get("format_version") not in READABLE_VERSIONS:
    raise CheckpointError(f"'{config_path}' has format version {config.get('format_version')}; "
                          f"this unf-lopt reads versions {READABLE_VERSIONS}")
  payload = params_path.read_bytes()
  if hashlib.sha256(payload).hexdigest() != config.get("meta_params_sha256"):
    raise CheckpointError(f"'{params_path}' does not match the checksum in {CONFIG_FILE}; "
                          "the checkpoint is truncated or corrupted")
  try:
    meta_params = flax.serialization.msgpack_restore(payload)
  except Exception as error:  # the msgpack reader raises several types
    raise CheckpointError(f"'{params_path}' cannot be decoded ({error})") from error
  spec = config.get("spec")
  if spec is not None and spec != "infer":
    spec = _spec_from_json(spec)
  options = {name: config.get(name, default) for name, default in DEFAULT_OPTIONS.items()}
  try:
    lopt = NominalLOpt(config["update_net"], spec=spec, hidden=config["hidden"],
                       depth=config["depth"], **options)
  except (KeyError, TypeError, ValueError) as error:
    raise CheckpointError(f"'{config_path}' describes no valid optimizer ({error!r})") from error
  return lopt, meta_params


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
  """The ``metadata`` (and versions) stored with a checkpoint, without loading it."""
  config = json.loads((Path(path) / CONFIG_FILE).read_text())
  return {**config.get("metadata", {}), "versions": config.get("versions", {})}
