"""Training data streamed from host memory gives the batches, and results, of data on the device.

Streaming over devices of several processes: tests/multiprocess_test.py.
"""

import jax
import numpy as np
import pytest

from unf_lopt.meta_train.config import MetaTrainConfig
from unf_lopt.meta_train.inner import InnerProblem
from unf_lopt.meta_train.trainer import MetaTrainer
from unf_lopt.tasks import get_task


def _trained(max_device_data_mb: float):
  config = MetaTrainConfig(task="tiny_mlp", update_net="deepset", outer_steps=2, num_runs=2,
                           trunc_length=3, horizon=6, max_device_data_mb=max_device_data_mb)
  trainer = MetaTrainer(config, None, quiet=True)
  state = trainer.initial_state()
  for step in range(2):
    state, metrics = trainer.step(state, step)
  return trainer, jax.tree.map(np.asarray, (state, metrics))


def test_a_split_over_the_threshold_stays_on_the_host():
  task = get_task("tiny_mlp")
  on_device = InnerProblem.from_task(task)
  streamed = InnerProblem.from_task(task, max_device_data_mb=0)
  assert not on_device.streams and on_device.data
  assert streamed.streams and not streamed.data
  assert all(isinstance(v, np.ndarray) for v in streamed.host_data.values())
  # The rows a streamed batch takes are the rows the on-device sampler takes.
  key = jax.random.PRNGKey(3)
  rows = np.asarray(streamed.batch_rows(key))
  batch = on_device.sample_batch(on_device.data, key)
  for name, values in streamed.host_data.items():
    np.testing.assert_array_equal(values[rows], np.asarray(batch[name]))


@pytest.mark.slow
def test_streamed_meta_training_equals_meta_training_on_device_data():
  streamed_trainer, streamed = _trained(0.0)
  device_trainer, on_device = _trained(4096.0)
  assert streamed_trainer.problem.streams and not device_trainer.problem.streams
  for a, b in zip(jax.tree.leaves(streamed), jax.tree.leaves(on_device)):
    np.testing.assert_array_equal(a, b)
  # Two steps moved the meta-parameters: the equality is not of untouched states.
  initial = jax.tree.map(np.asarray, device_trainer.initial_state().meta_params)
  assert any(not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(initial), jax.tree.leaves(on_device[0].meta_params)))
