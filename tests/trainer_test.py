"""Meta-training runs: learning, resumption after SIGKILL, run-directory and input checks."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unf_lopt.meta_train import checkpoints, cli
from unf_lopt.meta_train.inner import unroll
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


def test_meta_training_lowers_the_meta_loss(tmp_path):
  config = MetaTrainConfig(**dict(TINY, outer_steps=40, meta_learning_rate=0.02))
  trainer = MetaTrainer(config, tmp_path / "run", quiet=True)
  before = mean_training_loss(trainer, trainer.initial_state().meta_params)
  meta = trainer.run()
  after = mean_training_loss(trainer, meta)
  assert after < before - 0.05, (before, after)
  lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
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


def test_a_killed_run_resumes_to_the_uninterrupted_result_bit_for_bit(tmp_path):
  flags = ["--task", "tiny_mlp", "--update-net", "unf", "--num-runs", "4", "--trunc-length", "5",
           "--horizon", "20", "--outer-steps", "60", "--checkpoint-every", "2", "--log-every", "2",
           "--quiet"]
  killed_dir = tmp_path / "killed"
  process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, *flags, "--out", str(killed_dir)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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


def test_cli_reports_bad_input_clearly(tmp_path, capsys):
  out = ["--out", str(tmp_path / "x"), "--quiet"]
  assert cli.main(["--task", "mlp_fminst", *out]) == 2
  assert "Did you mean mlp_fmnist" in capsys.readouterr().err
  assert cli.main(["--update-net", "lstm", *out]) == 2
  assert "unknown update net 'lstm'" in capsys.readouterr().err
  assert cli.main(["--task", "tiny_rnn", "--update-net", "nfn", *out]) == 2
  assert "NFN" in capsys.readouterr().err
  config = tmp_path / "run.yaml"
  config.write_text("task: tiny_mlp\nnum-runs: 2\nbogus: 1\n")
  assert cli.main(["--config", str(config), *out]) == 2
  assert "unknown configuration keys ['bogus']" in capsys.readouterr().err
  assert not (tmp_path / "x").exists()  # nothing was started


def test_config_file_and_flags(tmp_path):
  config = tmp_path / "run.json"
  config.write_text(json.dumps({"task": "tiny_mlp", "update_net": "sgdm", "num_runs": 2,
                                "trunc_length": 2, "horizon": 4, "outer_steps": 5}))
  assert cli.main(["--config", str(config), "--outer-steps", "2", "--quiet",
                   "--out", str(tmp_path / "run")]) == 0
  stored = json.loads((tmp_path / "run" / "config.json").read_text())
  assert stored["outer_steps"] == 2 and stored["num_runs"] == 2 and stored["sigma"] == 0.01
