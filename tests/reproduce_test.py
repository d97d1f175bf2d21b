"""The reproduction protocols are valid, and the pipeline runs end to end on a tiny one."""

import importlib
import json
import pathlib

import jax
import numpy as np
import pytest

from unf_lopt import tasks
from unf_lopt.evaluate.experiments import reproduce
from unf_lopt.meta_train import cli
from unf_lopt.meta_train.config import MetaTrainConfig

# The module (the package's `pretrained` attribute is the function).
pretrained_lib = importlib.import_module("unf_lopt.pretrained")


@pytest.mark.parametrize("scale", reproduce.SCALES)
@pytest.mark.parametrize("name", reproduce.PROTOCOLS)
def test_every_protocol_gives_valid_meta_training_configs_and_tasks(name, scale, tmp_path):
  protocol = reproduce.load_protocol(name, scale)
  assert {"sgdm", "unf", "deepset"} <= {variant.name for variant in protocol.variants}
  parser = cli._parser()  # pylint: disable=protected-access
  for variant in protocol.variants:
    config = MetaTrainConfig.from_dict(dict(protocol.meta_train, task=protocol.task,
                                            task_options=variant.task_options,
                                            update_net=variant.update_net, **variant.meta_train))
    assert config.horizon == protocol.horizon
    # The command line reproduce runs gives the same configuration.
    args = parser.parse_args(reproduce.meta_train_flags(protocol, variant, tmp_path))
    assert cli._config(parser, args) == config  # pylint: disable=protected-access
    task = tasks.get_task(protocol.task, **variant.task_options)
    assert task.spec_kind == variant.spec
    jax.eval_shape(task.init, jax.random.PRNGKey(0))  # the options fit the model
  assert protocol.evaluation["seeds"] >= 3


def test_nfn_follows_table_3_head_bias_per_task():
  cnn_nfn = next(v for v in reproduce.load_protocol("cnn").variants if v.name == "nfn")
  mlp_nfn = next(v for v in reproduce.load_protocol("mlp_fmnist").variants if v.name == "nfn")
  assert cnn_nfn.meta_train == {"nfn_head_bias": False}
  assert "--no-nfn-head-bias" in reproduce.meta_train_flags(
      reproduce.load_protocol("cnn"), cnn_nfn, pathlib.Path("runs"))
  assert mlp_nfn.meta_train == {}


def test_paper_scale_is_the_papers_meta_training():
  for name in reproduce.PROTOCOLS:
    settings = reproduce.load_protocol(name, "paper").meta_train
    assert (settings["outer_steps"], settings["num_runs"], settings["trunc_length"],
            settings["sigma"]) == (50_000, 16, 50, 0.01)
  assert reproduce.load_protocol("transformer_lm1b", "paper").horizon == 5000
  assert reproduce.load_protocol("cnn", "paper").task == "cnn_cifar10"


def test_a_broken_protocol_file_is_named(tmp_path):
  path = tmp_path / "broken.yaml"
  path.write_text("task: tiny_mlp\nvariants: {unf: {update_net: unf}}\n")
  with pytest.raises(ValueError, match="broken.yaml.*scales"):
    reproduce.load_protocol(path)
  with pytest.raises(ValueError, match="unknown protocol"):
    reproduce.load_protocol("mlp")


TINY = """
task: tiny_mlp
variants:
  sgdm: {update_net: sgdm}
  unf: {update_net: unf}
  unf_paper_spec: {update_net: unf, task_options: {spec: paper}}
scales:
  cpu:
    meta_train: {outer_steps: 2, num_runs: 2, trunc_length: 2, horizon: 4, checkpoint_every: 1}
    evaluation: {steps: 60, seeds: 2}
"""


@pytest.mark.slow
def test_tiny_protocol_trains_evaluates_tabulates_plots_ships_and_resumes(tmp_path,
                                                                          monkeypatch):
  pytest.importorskip("matplotlib")
  protocol_file = tmp_path / "tiny.yaml"
  protocol_file.write_text(TINY)
  flags = ["--task", str(protocol_file), "--out", str(tmp_path / "runs"),
           "--eval", str(tmp_path / "eval")]
  assert reproduce.main(flags) == 0
  runs, eval_root = tmp_path / "runs" / "cpu" / "tiny", tmp_path / "eval" / "cpu" / "tiny"
  table = (eval_root / "results.md").read_text()
  for label in ("| sgdm | true", "| unf | true", "| unf_paper_spec | paper", "| adam | -"):
    assert label in table
  assert (eval_root / "curves.png").stat().st_size > 0
  true_threshold = json.loads((eval_root / "true_spec" / "summary.json").read_text())["threshold"]
  paper = json.loads((eval_root / "spec_paper" / "summary.json").read_text())
  assert paper["threshold"] == true_threshold  # one threshold across the groups

  metrics = (runs / "unf" / "metrics.jsonl").read_text()
  assert reproduce.main(flags + ["--variants", "unf", "--meta-train-only"]) == 0
  assert (runs / "unf" / "metrics.jsonl").read_text() == metrics  # finished: nothing redone
  curves = {group: (eval_root / group / "curves.csv").stat().st_mtime_ns
            for group in ("true_spec", "spec_paper")}
  assert reproduce.main(flags) == 0  # every evaluation is current: kept, not rerun
  assert curves == {group: (eval_root / group / "curves.csv").stat().st_mtime_ns
                    for group in curves}
  assert "| unf_paper_spec | paper" in (eval_root / "results.md").read_text()

  protocol = reproduce.load_protocol(protocol_file)
  shipped = reproduce.ship(protocol, runs, eval_root, target=tmp_path / "shipped")
  assert sorted(shipped) == ["sgdm_tiny_mlp", "unf_paper_spec_tiny_mlp", "unf_tiny_mlp"]
  info = json.loads((tmp_path / "shipped" / "unf_paper_spec_tiny_mlp" / "info.json").read_text())
  assert (info["task"], info["task_options"], info["spec"], info["num_steps"]) == (
      "tiny_mlp", {"spec": "paper"}, "paper", 4)
  assert info["result"]["optimizer"] == "unf_paper_spec"
  assert np.isfinite(info["result"]["final_train_loss"])

  # --shipped evaluates the shipped copies under the variants' names: the same curves, no training.
  monkeypatch.setattr(reproduce, "SHIPPED", tmp_path / "shipped")
  monkeypatch.setattr(pretrained_lib, "SHIPPED", tmp_path / "shipped")
  assert reproduce.main(flags + ["--shipped", "--eval", str(tmp_path / "from_shipped")]) == 0
  from_shipped = tmp_path / "from_shipped" / "cpu" / "tiny"
  table = (from_shipped / "results.md").read_text()
  for label in ("| sgdm | true", "| unf | true", "| unf_paper_spec | paper", "| adam | -"):
    assert label in table
  assert "sgdm 2, unf 2, unf_paper_spec 2 (the protocol: 2)" in table
  for group in ("true_spec", "spec_paper"):
    assert (from_shipped / group / "curves.csv").read_text() == (
        eval_root / group / "curves.csv").read_text()
  with pytest.raises(SystemExit):
    reproduce.main(flags + ["--shipped", "--ship"])
