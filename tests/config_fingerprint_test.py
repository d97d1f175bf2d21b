"""The meta-training config fingerprint: what a run directory is resumed against.

The fingerprint must change with every setting that changes results, stay put for
the settings a resume may change, and be the same in every process and version,
or old run directories could not be resumed.
"""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from unf_lopt.meta_train.config import RESUMABLE_KEYS, MetaTrainConfig

BASE = {"task": "tiny_mlp", "update_net": "deepset"}

# A changed value for every setting, each still a valid configuration.
CHANGED = {"task": "tiny_rnn", "update_net": "unf", "outer_steps": 7, "num_runs": 8,
           "trunc_length": 10, "horizon": 100, "sigma": 0.02, "meta_loss": "final",
           "meta_learning_rate": 3e-4, "schedule": "cosine", "clip_norm": 2.0, "hidden": 16,
           "depth": 2, "seed": 1, "num_devices": 2, "checkpoint_every": 5, "log_every": 3,
           "backend": "learned_optimization", "tensorboard": True, "momentum": "ema",
           "feature_normalization": "clip_per_tensor", "initial_beta": 1e-4,
           "task_options": {"spec": "paper"}, "max_device_data_mb": 64.0,
           "nfn_head_bias": False, "identity_share": 0.8}

# Written by the code before `backend` existed (commit b346b3f^): runs it started must resume.
RECORDED = {(): "4a76bf1216bc2171", tuple(sorted(BASE.items())): "5104eefd8561b3ac"}


def test_every_setting_has_a_changed_value_here():
  assert set(CHANGED) == {field.name for field in dataclasses.fields(MetaTrainConfig)}


def test_equal_settings_give_equal_fingerprints():
  assert MetaTrainConfig(**BASE).fingerprint() == MetaTrainConfig(**BASE).fingerprint()
  same = MetaTrainConfig.from_dict(json.loads(json.dumps(MetaTrainConfig(**BASE).to_dict())))
  assert same.fingerprint() == MetaTrainConfig(**BASE).fingerprint()


@pytest.mark.parametrize("name", sorted(CHANGED))
def test_fingerprint_changes_exactly_with_the_settings_that_change_results(name):
  base = MetaTrainConfig(**BASE)
  changed = dataclasses.replace(base, **{name: CHANGED[name]})
  assert getattr(changed, name) != getattr(base, name)
  if name in RESUMABLE_KEYS:
    assert changed.fingerprint() == base.fingerprint()
  else:
    assert changed.fingerprint() != base.fingerprint()


def test_fingerprints_recorded_by_earlier_versions_still_match():
  for settings, recorded in RECORDED.items():
    assert MetaTrainConfig(**dict(settings)).fingerprint() == recorded, settings
    resumed = MetaTrainConfig(**dict(settings), outer_steps=3, log_every=1, checkpoint_every=2)
    assert resumed.fingerprint() == recorded, settings


def test_fingerprint_is_the_same_in_another_process():
  # A fresh interpreter has another hash seed: a fingerprint built on hash() would differ.
  code = ("from unf_lopt.meta_train.config import MetaTrainConfig\n"
          f"print(MetaTrainConfig(**{CHANGED!r}).fingerprint())")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=300, env={**os.environ, "PYTHONHASHSEED": "123"})
  assert result.stdout.split()[-1] == MetaTrainConfig(**CHANGED).fingerprint()

