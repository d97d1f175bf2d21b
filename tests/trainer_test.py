"""Meta-training runs: learning, resumption after SIGKILL and Ctrl-C, logging, input checks."""

import json
import signal
import struct
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from unf_lopt.meta_train import checkpoints, cli, config as config_lib, outer_loop
from unf_lopt.meta_train.inner import unroll
from unf_lopt.meta_train.pes import TruncatedPES
from unf_lopt.meta_train.trainer import MetaTrainConfig, MetaTrainer

TINY = dict(task="tiny_mlp", update_net="unf", num_runs=4, trunc_length=5, horizon=20,
            log_every=2, checkpoint_every=3)


def leaves_equal(a, b):
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def mean_training_loss(trainer, meta, horizon=20, seeds=8):
  losses = jax.vmap(lambda key: unroll(trainer.lopt, meta, trainer.problem, key, horizon))(
      jax.random.split(jax.random.PRNGKey(123), seeds))
  return float(trainer.task.normalizer(losses).mean())


@pytest.mark.slow
def test_meta_training_lowers_the_meta_loss(tmp_path):
  config = MetaTrainConfig(**dict(TINY, outer_steps=40, meta_learning_rate=0.02))
  trainer = MetaTrainer(config, tmp_path / "run", quiet=True)
  before = mean_training_loss(trainer, trainer.initial_state().meta_params)
  meta = trainer.run()
  after = mean_training_loss(trainer, meta)
  assert after < before - 0.05, (before, after)
  lines = [json.loads(line)
           for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert [line["step"] for line in lines] == list(range(2, 41, 2))
  assert {"meta_loss", "grad_norm", "alpha", "beta", "g0", "inner_steps_per_s", "resets",
          "blowups"} <= set(lines[0])
  assert sum(line["resets"] for line in lines) > 0
  # The final optimizer loads on its own and equals the trained meta-parameters.
  import unf_lopt as U  # pylint: disable=g-import-not-at-top
  lopt, loaded = U.load_checkpoint(tmp_path / "run" / "optimizer")
  assert lopt.update_net == "unf" and leaves_equal(loaded, meta)
  # Same seed, same result.
  again = MetaTrainer(config, None, quiet=True).run()
  assert leaves_equal(again, meta)


KILLED_RUN = """
import sys
from unf_lopt.meta_train import cli
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_result_bit_for_bit(tmp_path):
  flags = ["--task", "tiny_mlp", "--update-net", "unf", "--num-runs", "4", "--trunc-length", "5",
           "--horizon", "20", "--outer-steps", "60", "--checkpoint-every", "2", "--log-every", "2",
           "--quiet"]
  killed_dir = tmp_path / "killed"
  with subprocess.Popen([sys.executable, "-c", KILLED_RUN, *flags, "--out", str(killed_dir)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as process:
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
      if checkpoints.complete_steps(killed_dir / "checkpoints")[-1:] >= [6]:
        break
      time.sleep(0.01)
    assert process.poll() is None, process.stderr.read().decode()[-2000:]
    process.send_signal(signal.SIGKILL)
    process.wait()
  assert not (killed_dir / "optimizer").exists()
  # Debris a kill can leave: a staging directory and an incomplete step.
  (killed_dir / "checkpoints" / ".step_0000099.partial").mkdir()
  (killed_dir / "checkpoints" / "step_0000098").mkdir()
  assert cli.main([*flags, "--out", str(killed_dir)]) == 0
  assert cli.main([*flags, "--out", str(tmp_path / "straight")]) == 0
  import unf_lopt as U  # pylint: disable=g-import-not-at-top
  _, resumed = U.load_checkpoint(killed_dir / "optimizer")
  _, straight = U.load_checkpoint(tmp_path / "straight" / "optimizer")
  assert leaves_equal(resumed, straight)
  steps = [json.loads(line)["step"] for line in
           (killed_dir / "metrics.jsonl").read_text().splitlines()]
  assert steps == list(range(2, 61, 2))  # no duplicated or missing log lines


def _saved_state(tmp_path, state):
  import unf_lopt as U  # pylint: disable=g-import-not-at-top
  lopt = U.NominalLOpt("sgdm")
  checkpoints.save(tmp_path, 5, state, lopt, lopt.init(jax.random.PRNGKey(0)), "fp")


def test_a_checkpoint_of_another_state_layout_is_refused_with_what_still_loads(tmp_path):
  state = {"momenta": {"w": np.ones((3, 6), np.float32)}}
  _saved_state(tmp_path, state)
  step, restored = checkpoints.restore(tmp_path, state, "fp")
  assert step == 5 and np.array_equal(restored["momenta"]["w"], state["momenta"]["w"])
  info_file = tmp_path / "step_0000005" / checkpoints.STATE_INFO
  info = json.loads(info_file.read_text())
  del info["state_layout"]  # as written before layouts were versioned
  info_file.write_text(json.dumps(info))
  with pytest.raises(checkpoints.TrainingCheckpointError,
                     match=r"layout 1, written by an earlier unf-lopt.*load_checkpoint"):
    checkpoints.restore(tmp_path, state, "fp")


def test_a_restored_array_of_the_wrong_shape_is_named(tmp_path):
  _saved_state(tmp_path, {"momenta": {"w": np.ones((3, 6), np.float32)}})
  with pytest.raises(checkpoints.TrainingCheckpointError,
                     match=r"\['momenta'\]\['w'\] has shape \(3, 6\) where this run's state "
                           r"has \(3, 7\)"):
    checkpoints.restore(tmp_path, {"momenta": {"w": np.ones((3, 7), np.float32)}}, "fp")


@pytest.mark.slow
def test_a_finished_run_returns_its_optimizer_without_restoring_the_state(tmp_path):
  config = MetaTrainConfig(**dict(TINY, update_net="sgdm", outer_steps=3))
  meta = MetaTrainer(config, tmp_path, quiet=True).run()
  info_file = tmp_path / "checkpoints" / "step_0000003" / checkpoints.STATE_INFO
  info = json.loads(info_file.read_text())
  info["state_layout"] = checkpoints.STATE_LAYOUT - 1  # as if written by an older version
  info_file.write_text(json.dumps(info))
  again = MetaTrainer(config, tmp_path, quiet=True).run()
  assert leaves_equal(again, meta)
  # An unfinished one must restore its state, and refuses the old layout.
  with pytest.raises(checkpoints.TrainingCheckpointError, match="layout"):
    MetaTrainer(MetaTrainConfig(**dict(TINY, update_net="sgdm", outer_steps=6)), tmp_path,
                quiet=True).run()


@pytest.mark.slow
def test_damaged_checkpoint_is_reported_not_used(tmp_path):
  config = MetaTrainConfig(**dict(TINY, update_net="sgdm", outer_steps=3))
  MetaTrainer(config, tmp_path, quiet=True).run()
  state_file = tmp_path / "checkpoints" / "step_0000003" / checkpoints.STATE_FILE
  payload = bytearray(state_file.read_bytes())
  payload[len(payload) // 2] ^= 0xFF
  state_file.write_bytes(bytes(payload))
  with pytest.raises(checkpoints.TrainingCheckpointError, match="checksum"):
    MetaTrainer(MetaTrainConfig(**dict(TINY, update_net="sgdm", outer_steps=6)), tmp_path,
                quiet=True).run()


@pytest.mark.slow
def test_run_directory_with_another_config_is_refused_before_compute(tmp_path):
  MetaTrainer(MetaTrainConfig(**dict(TINY, update_net="sgdm", outer_steps=2)), tmp_path,
              quiet=True).run()
  with pytest.raises(ValueError, match="differs in: sigma"):
    MetaTrainer(MetaTrainConfig(**dict(TINY, update_net="sgdm", outer_steps=2, sigma=0.1)),
                tmp_path, quiet=True)
  # More outer steps is a continuation, not a different run.
  MetaTrainer(MetaTrainConfig(**dict(TINY, update_net="sgdm", outer_steps=4)), tmp_path,
              quiet=True).run()
  assert checkpoints.complete_steps(tmp_path / "checkpoints")[-1] == 4


def exit_code(argv) -> int:
  """What ``unf-meta-train ARGV`` exits with (bad input exits 2 through argparse)."""
  try:
    return cli.main(argv)
  except SystemExit as exit_:
    return exit_.code


def test_cli_reports_bad_input_clearly(tmp_path, capsys):
  out = ["--out", str(tmp_path / "x"), "--quiet"]
  assert exit_code(["--task", "mlp_fminst", *out]) == 2
  assert "Did you mean mlp_fmnist" in capsys.readouterr().err
  assert exit_code(["--update-net", "lstm", *out]) == 2
  assert "unknown update net 'lstm'" in capsys.readouterr().err
  assert exit_code(["--task", "tiny_rnn", "--update-net", "nfn", *out]) == 2
  assert "NFN" in capsys.readouterr().err
  config = tmp_path / "run.yaml"
  config.write_text("task: tiny_mlp\nnum-runs: 2\nbogus: 1\n")
  assert exit_code(["--config", str(config), *out]) == 2
  assert "unknown configuration keys ['bogus']" in capsys.readouterr().err
  assert not (tmp_path / "x").exists()  # nothing was started


@pytest.fixture(scope="module")
def config_file_run(tmp_path_factory):
  """One finished CLI run from a config file plus flags, with TensorBoard: its run directory.

  Shared by the tests that only read it, so the tiny meta-training compiles once.
  """
  root = tmp_path_factory.mktemp("config_file_run")
  config = root / "run.json"
  config.write_text(json.dumps({"task": "tiny_mlp", "update_net": "sgdm", "num_runs": 2,
                                "trunc_length": 2, "horizon": 4, "outer_steps": 5,
                                "log_every": 1}))
  assert cli.main(["--config", str(config), "--outer-steps", "3", "--tensorboard", "--quiet",
                   "--out", str(root / "run")]) == 0
  return root / "run"


def test_config_file_and_flags(config_file_run):
  stored = json.loads((config_file_run / "config.json").read_text())
  assert stored["outer_steps"] == 3 and stored["num_runs"] == 2 and stored["sigma"] == 0.01
  assert stored["log_every"] == 1 and stored["tensorboard"] is True


# -- Ctrl-C and resuming -------------------------------------------------------------

SMALL_FLAGS = ["--task", "tiny_mlp", "--update-net", "sgdm", "--num-runs", "2", "--trunc-length",
               "2", "--horizon", "4", "--outer-steps", "6", "--checkpoint-every", "10",
               "--log-every", "1", "--quiet"]


def interrupt_at(monkeypatch, outer_step):
  """Makes the first call of ``MetaTrainer.step`` for ``outer_step`` raise KeyboardInterrupt."""
  original, fired = MetaTrainer.step, []

  def step(self, state, step_index):
    if step_index == outer_step and not fired:
      fired.append(step_index)
      raise KeyboardInterrupt
    return original(self, state, step_index)

  monkeypatch.setattr(MetaTrainer, "step", step)


def metric_steps(run_dir):
  return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_ctrl_c_saves_the_current_step_and_the_resumed_run_matches(tmp_path, monkeypatch, capsys):
  run_dir = tmp_path / "run"
  interrupt_at(monkeypatch, 3)  # after 3 finished steps, before the first regular checkpoint
  assert cli.main([*SMALL_FLAGS, "--out", str(run_dir)]) == cli.EXIT_INTERRUPTED == 130
  err = capsys.readouterr().err
  assert "Traceback" not in err
  assert err.count("\n") == 1, err
  assert err.startswith("unf-meta-train: interrupted after outer step 3; checkpoint saved to ")
  assert str(run_dir / "checkpoints" / "step_0000003") in err
  assert checkpoints.complete_steps(run_dir / "checkpoints") == [3]
  assert metric_steps(run_dir) == [1, 2, 3]
  monkeypatch.undo()
  # Resuming without --quiet logs where it resumes from (through `logging`).
  assert cli.main([*[f for f in SMALL_FLAGS if f != "--quiet"], "--out", str(run_dir)]) == 0
  assert f"unf-meta-train: resuming {run_dir} from outer step 3" in capsys.readouterr().err
  assert metric_steps(run_dir) == [1, 2, 3, 4, 5, 6]  # one row per outer step
  assert cli.main([*SMALL_FLAGS, "--out", str(tmp_path / "straight")]) == 0
  import unf_lopt as U  # pylint: disable=g-import-not-at-top
  _, resumed = U.load_checkpoint(run_dir / "optimizer")
  _, straight = U.load_checkpoint(tmp_path / "straight" / "optimizer")
  assert leaves_equal(resumed, straight)


@pytest.mark.slow
def test_ctrl_c_when_nothing_can_be_saved_says_so_and_resume_drops_its_rows(
    tmp_path, monkeypatch, capsys):
  run_dir = tmp_path / "run"
  interrupt_at(monkeypatch, 2)

  def interrupted_save(*args, **kwargs):
    raise KeyboardInterrupt  # a second Ctrl-C while the checkpoint is written

  monkeypatch.setattr(checkpoints, "save", interrupted_save)
  assert cli.main([*SMALL_FLAGS, "--out", str(run_dir)]) == 130
  err = capsys.readouterr().err
  assert err == ("unf-meta-train: interrupted after outer step 2; nothing was saved "
                 "(interrupted again)\n")
  assert checkpoints.complete_steps(run_dir / "checkpoints") == []
  assert metric_steps(run_dir) == [1, 2]  # rows of an attempt without a checkpoint
  monkeypatch.undo()
  assert cli.main([*SMALL_FLAGS, "--out", str(run_dir)]) == 0
  assert metric_steps(run_dir) == [1, 2, 3, 4, 5, 6]


def test_ctrl_c_before_training_starts_exits_130_saying_nothing_was_saved(
    tmp_path, monkeypatch, capsys):
  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt  # e.g. while the task's data loads

  monkeypatch.setattr(cli, "make_trainer", interrupted)
  assert cli.main([*SMALL_FLAGS, "--out", str(tmp_path / "run")]) == 130
  assert capsys.readouterr().err == ("unf-meta-train: interrupted before training started; "
                                     "nothing was saved\n")


def test_interrupt_without_a_run_directory_is_reported(monkeypatch):
  interrupt_at(monkeypatch, 1)
  config = MetaTrainConfig(**dict(TINY, update_net="sgdm", outer_steps=3, num_runs=2))
  with pytest.raises(outer_loop.TrainingInterrupted, match="after outer step 1; nothing was "
                     "saved") as raised:
    MetaTrainer(config, None, quiet=True).run()
  assert raised.value.step == 1 and raised.value.checkpoint is None


# -- non-finite meta-gradients -------------------------------------------------------

def test_non_finite_meta_gradients_are_skipped_then_stop_the_run(tmp_path, monkeypatch):
  original = TruncatedPES.estimate

  def poisoned(self, meta, state, key):
    gradient, state, metrics = original(self, meta, state, key)
    return jax.tree.map(lambda g: g * jnp.nan, gradient), state, metrics

  monkeypatch.setattr(TruncatedPES, "estimate", poisoned)
  steps = config_lib.MAX_NONFINITE_UPDATES + 2
  config = MetaTrainConfig(**dict(TINY, update_net="sgdm", num_runs=2, outer_steps=steps,
                                  log_every=1, checkpoint_every=1))
  trainer = MetaTrainer(config, tmp_path, quiet=True)
  with pytest.raises(outer_loop.NonFiniteMetaParamsError,
                     match=f"after outer step {steps - 1} .*checkpoint is outer step {steps - 2}"):
    trainer.run()
  # Until then every update was skipped: the meta-parameters never moved.
  assert leaves_equal(trainer.state.meta_params, trainer.initial_meta_params)
  assert checkpoints.complete_steps(tmp_path / "checkpoints")[-1] == steps - 2
  assert metric_steps(tmp_path) == list(range(1, steps - 1))


# -- configuration values --------------------------------------------------------------

@pytest.mark.parametrize("values, message", [
    ({"outer_steps": "five"}, "outer_steps must be an int, got 'five'"),
    ({"sigma": "0.1"}, "sigma must be a float"),
    ({"hidden": True}, "hidden must be an int, got True"),
    ({"tensorboard": "yes"}, "tensorboard must be a bool"),
    ({"depth": -1}, "depth must not be negative"),
])
def test_config_values_of_the_wrong_type_are_named(values, message):
  with pytest.raises(ValueError, match=message):
    MetaTrainConfig.from_dict(values)


def test_integer_floats_are_floats():
  assert MetaTrainConfig(sigma=1).sigma == 1.0 and isinstance(MetaTrainConfig(sigma=1).sigma, float)


# -- TensorBoard ---------------------------------------------------------------------

def _crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli), bit by bit: what TFRecord framing uses."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc ^= byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = _crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_tfrecords(path):
  """The payloads of a TFRecord file: uint64 length, uint32 crc, payload, uint32 crc; checked."""
  data, offset, records = path.read_bytes(), 0, []
  while offset < len(data):
    header = data[offset:offset + 8]
    (length,), (header_crc,) = struct.unpack("<Q", header), struct.unpack(
        "<I", data[offset + 8:offset + 12])
    assert header_crc == _masked_crc(header), f"bad length checksum at byte {offset}"
    payload = data[offset + 12:offset + 12 + length]
    (payload_crc,) = struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])
    assert payload_crc == _masked_crc(payload), f"bad payload checksum at byte {offset}"
    records.append(payload)
    offset += 16 + length
  return records


def test_crc32c_matches_the_standard_check_value():
  assert _crc32c(b"123456789") == 0xE3069283  # the CRC-32C catalogue's check value


def test_tensorboard_events_hold_the_metrics_rows(config_file_run):
  event_files = sorted(config_file_run.glob("events.out.tfevents.*"))
  assert len(event_files) == 1
  scalars = {}
  for payload in read_tfrecords(event_files[0]):
    event = event_pb2.Event.FromString(payload)
    for value in event.summary.value:
      scalars[(event.step, value.tag)] = value.simple_value
  rows = [json.loads(line)
          for line in (config_file_run / "metrics.jsonl").read_text().splitlines()]
  expected = {(row["step"], name): value for row in rows for name, value in row.items()
              if name != "step"}
  assert {name for _, name in expected} == {"meta_loss", "resets", "blowups", "grad_norm",
                                            "inner_steps_per_s", "alpha", "g0"}
  assert {step for step, _ in expected} == {1, 2, 3}
  assert scalars.keys() == expected.keys()
  for key, value in expected.items():
    assert scalars[key] == np.float32(value), key  # TensorBoard stores float32


def test_tensorboard_without_tensorboardx_is_explained(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)  # makes the import fail
  config = MetaTrainConfig(**dict(TINY, update_net="sgdm", tensorboard=True))
  with pytest.raises(ImportError, match=r'pip install "unf-lopt\[tensorboard\]"'):
    MetaTrainer(config, tmp_path, quiet=True)
  assert not (tmp_path / "config.json").exists()  # refused before anything was written
