"""learned_optimization stays optional: the core never imports it, and its absence is explained.

The interop itself is tested in tests_lo/ (in .venv-lo, by `make test`).
"""

import hashlib
import json
import subprocess
import sys
import textwrap

from unf_lopt.meta_train.config import RESUMABLE_KEYS, MetaTrainConfig


def run_python(code: str) -> dict:
  """Runs ``code`` in a fresh interpreter (so that nothing here is imported) and reads its JSON."""
  result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, check=True, timeout=300)
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_core_modules_do_not_import_the_integration():
  found = run_python("""
      import json, sys
      import unf_lopt, unf_lopt.tasks, unf_lopt.meta_train.backends, unf_lopt.meta_train.cli
      import unf_lopt.evaluate.commands.evaluate
      print(json.dumps(sorted(m for m in sys.modules
                              if m.startswith(("learned_optimization", "unf_lopt.integrations.",
                                               "unf_lopt.meta_train.lo_backend",
                                               "unf_lopt.tasks.lo_tasks", "haiku", "tensorflow",
                                               "tensorboardX")))))
  """)
  assert found == []


def test_missing_learned_optimization_is_explained():
  # sys.modules[name] = None makes `import name` raise ImportError, installed or not.
  outcome = run_python("""
      import contextlib, io, json, sys
      sys.modules["learned_optimization"] = None
      from unf_lopt import tasks
      from unf_lopt.evaluate.commands import evaluate
      from unf_lopt.meta_train import cli
      try:
        tasks.get_task("lo:quadratic")
        task_error = ""
      except ImportError as error:
        task_error = str(error)
      codes, messages = [], []
      for main, argv in [
          (cli.main, ["--task", "tiny_mlp", "--backend", "learned_optimization",
                      "--out", "/nonexistent/x"]),
          (evaluate.main, ["--task", "tiny_mlp", "--optimizers", "lo:mlp_lopt",
                           "--out", "/nonexistent/y"]),
      ]:
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
          try:
            codes.append(main(argv))
          except SystemExit as exit:  # the commands exit 2 on bad input
            codes.append(exit.code)
        messages.append(stderr.getvalue())
      print(json.dumps({"task_error": task_error, "codes": codes, "messages": messages}))
  """)
  assert "make lo-install" in outcome["task_error"]
  assert "pip install --no-deps learned-optimization==0.0.1" in outcome["task_error"]
  assert outcome["codes"] == [2, 2]
  assert all("make lo-install" in message for message in outcome["messages"])


def test_backend_option_leaves_existing_run_fingerprints_alone():
  """Runs written before ``backend`` existed must still resume: the default is not hashed."""
  config = MetaTrainConfig(task="tiny_mlp", update_net="deepset")
  # The fingerprint as computed before the option (and the optimizer options after it) existed.
  later = ("backend", "task_options", "momentum", "feature_normalization", "initial_beta",
           "nfn_head_bias", "identity_share")
  identity = {k: v for k, v in config.to_dict().items()
              if k not in RESUMABLE_KEYS and k not in later}
  before = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
  assert config.fingerprint() == before
  other = MetaTrainConfig(task="tiny_mlp", update_net="deepset", backend="learned_optimization")
  assert other.fingerprint() != before
