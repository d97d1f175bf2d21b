"""Meta-training over two processes on localhost (CPU collectives through gloo).

Each process is an `unf-meta-train` with 4 virtual CPU devices. They must
reach the meta-parameters of one process with 8 devices, resume from the run
directory only process 0 writes, and stop with an error, not hang, when the
other process dies. The two-process runs stream the training split from host
memory (each process gathers the batches of its own runs), the one-process run
keeps it on its devices.
"""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import unf_lopt as U

pytestmark = pytest.mark.slow

# What the survivor's log says when its peer is gone: the coordination service's error, or one of
# gloo's transport failures (an aborted collective).
DEAD_PEER_REASONS = ("stopped sending heartbeats", "external/gloo/gloo/transport",
                     "Connection reset by peer", "Connection closed by peer")
TRAINING = ["--task", "tiny_mlp", "--update-net", "unf", "--num-runs", "8", "--trunc-length",
            "3", "--horizon", "12", "--checkpoint-every", "3", "--log-every", "3", "--quiet"]


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def _environment(devices: int) -> dict[str, str]:
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  return env


def _command(out: pathlib.Path, outer_steps: int, *extra: str) -> list[str]:
  return [sys.executable, "-m", "unf_lopt.meta_train.cli", *TRAINING,
          "--outer-steps", str(outer_steps), "--out", str(out), *extra]


def _start_two_processes(out: pathlib.Path, outer_steps: int, *extra: str):
  port = _free_port()
  processes = []
  for process_id in range(2):
    log = open(out.parent / f"{out.name}_{process_id}.log", "w")  # closed by _finish
    processes.append(subprocess.Popen(
        _command(out, outer_steps, "--coordinator-address", f"127.0.0.1:{port}",
                 "--num-processes", "2", "--process-id", str(process_id),
                 "--max-device-data-mb", "0", *extra),
        env=_environment(4), stdout=log, stderr=subprocess.STDOUT))
    processes[-1].log = log
  return processes


def _finish(processes, timeout: float = 400) -> list[tuple[int, str]]:
  results = []
  for process in processes:
    try:
      process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
    process.log.close()
    results.append((process.returncode, pathlib.Path(process.log.name).read_text()))
  return results


def _meta_params(run: pathlib.Path):
  return U.load_checkpoint(run / "optimizer")[1]


def test_two_processes_resume_and_match_one_process_with_eight_devices(tmp_path):
  two = tmp_path / "two_processes"
  # Three outer steps, then a second launch continues to six from the checkpoint.
  for outer_steps in (3, 6):
    for code, log in _finish(_start_two_processes(two, outer_steps)):
      assert code == 0, log[-3000:]
  one = tmp_path / "one_process"
  result = subprocess.run(_command(one, 6), env=_environment(8), capture_output=True, text=True,
                          timeout=400)
  assert result.returncode == 0, result.stderr[-3000:]

  assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["step_0000003",
                                                                      "step_0000006"]
  rows = [line for line in (two / "metrics.jsonl").read_text().splitlines() if line]
  assert len(rows) == 2, rows  # process 1 wrote nothing, the resumed run no duplicate row
  expected, got = _meta_params(one), _meta_params(two)
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  # The meta-parameters moved: equality is not that of two untouched initialisations.
  initial = U.NominalLOpt("sgdm").init(jax.random.PRNGKey(0))
  assert float(np.asarray(got["log_alpha"])) != float(np.asarray(initial["log_alpha"]))


def test_a_dead_process_stops_the_other_with_an_error_and_the_run_resumes(tmp_path):
  run = tmp_path / "run"
  processes = _start_two_processes(run, 10_000, "--heartbeat-timeout", "5")
  deadline = time.time() + 400
  while not (run / "checkpoints" / "step_0000003").is_dir():
    assert time.time() < deadline and processes[0].poll() is None, "no checkpoint was written"
    time.sleep(0.5)
  processes[1].send_signal(signal.SIGKILL)
  killed_at = time.time()
  (code, log), _ = _finish(processes, timeout=120)
  assert code != 0
  assert time.time() - killed_at < 100, "the surviving process waited instead of stopping"
  # Which side notices first is a race: the coordination service (no heartbeat within the
  # timeout) or, when the peer dies mid-collective, gloo's transport (a truncated or reset
  # message aborts the process). Either way the survivor must say why it stopped.
  assert any(reason in log for reason in DEAD_PEER_REASONS), log[-3000:]

  newest = max(int(p.name.split("_")[1]) for p in (run / "checkpoints").glob("step_*"))
  for code, log in _finish(_start_two_processes(run, newest + 3)):
    assert code == 0, log[-3000:]
  assert (run / "optimizer").is_dir()
  steps = [int(line.split('"step": ')[1].split(",")[0])
           for line in (run / "metrics.jsonl").read_text().splitlines() if line]
  assert steps == sorted(set(steps)) and steps[-1] == newest + 3, steps
