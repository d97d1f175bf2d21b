"""Every command: bad input exits 2 with one line naming the flag or file, before any compute.

Also: every flag has help, ``--help`` states each default once, ``--list-tasks``
lists the registered tasks, and the installed entry points run these ``main``s.
"""

import argparse
import importlib.metadata
import json

import numpy as np
import pytest

from unf_lopt import tasks
from unf_lopt.evaluate import evaluation, plots
from unf_lopt.evaluate.commands import classify_inrs, evaluate, plot, predict_generalization
from unf_lopt.evaluate.experiments import fitting
from unf_lopt.meta_train import cli as meta_train
from unf_lopt.tasks import inr
from unf_lopt.tasks.zoo import generate

# name -> (parser factory, main)
COMMANDS = {
    "unf-meta-train": (meta_train._parser, meta_train.main),  # pylint: disable=protected-access
    "unf-evaluate": (evaluate.build_parser, evaluate.main),
    "unf-plot": (plot.build_parser, plot.main),
    "unf-predict-generalization": (predict_generalization.build_parser,
                                   predict_generalization.main),
    "unf-classify-inrs": (classify_inrs.build_parser, classify_inrs.main),
    "unf-make-zoo": (generate.build_parser, generate.main),
    "unf-make-inrs": (inr.build_parser, inr.main),
}


@pytest.fixture(autouse=True)
def no_compute(monkeypatch):
  """Any training, fitting, building or drawing fails the test: bad input must stop before."""
  def refuse(*args, **kwargs):
    raise AssertionError("compute started on bad input")

  real_make_trainer = meta_train.make_trainer

  def trainer_that_refuses(*args, **kwargs):
    trainer = real_make_trainer(*args, **kwargs)
    trainer.run = refuse
    return trainer

  monkeypatch.setattr(meta_train, "make_trainer", trainer_that_refuses)
  for module, name in [(evaluation, "train_curves"), (fitting, "fit"), (generate, "build"),
                       (inr, "build"), (inr, "fit_images"), (plots, "plot_evaluations"),
                       (plots, "plot_meta_training")]:
    monkeypatch.setattr(module, name, refuse)


def error_of(command: str, argv: list[str], capsys) -> str:
  """The stderr line of ``command`` on bad input ``argv``; asserts exit status 2 and one line."""
  capsys.readouterr()
  with pytest.raises(SystemExit) as exit:
    COMMANDS[command][1](argv)
  assert exit.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith(f"{command}: error: ") and err.count("\n") == 1, err
  return err


def write_npz(path, arrays):
  np.savez(path, **arrays)
  return str(path)


@pytest.fixture
def files(tmp_path):
  """Bad and valid inputs on disk."""
  a_file = tmp_path / "a_file"
  a_file.write_text("not a directory")
  small = {"params/w": np.zeros((6, 2, 2), np.float32),
           "split": np.asarray([0, 0, 0, 0, 1, 2], np.int8)}
  return {
      "file": str(a_file),
      "missing": str(tmp_path / "missing"),
      "empty_dir": str((tmp_path / "empty").mkdir() or tmp_path / "empty"),
      "zoo": write_npz(tmp_path / "zoo.npz", {**small, "success_rate": np.zeros(6, np.float32)}),
      "zoo_without_split": write_npz(tmp_path / "bad_zoo.npz",
                                     {"params/w": small["params/w"],
                                      "success_rate": np.zeros(6, np.float32)}),
      "inrs": write_npz(tmp_path / "inrs.npz", {**small, "label": np.zeros(6, np.int32),
                                                "psnr": np.zeros(6, np.float32)}),
      "tmp": tmp_path,
  }


def config_file(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


EVALUATE = ["--task", "tiny_mlp", "--optimizers", "adam", "--quiet"]


@pytest.mark.parametrize("argv, named", [
    (["--steps", "-10"], "--steps"),
    (["--seeds", "0"], "--seeds"),
    (["--eval-every", "0"], "--eval-every"),
    (["--steps", "10", "--final-window", "20"], "--final-window"),
    (["--threshold", "nan"], "--threshold"),
    (["--task-options", '{"hidden": 3}'], "--task-options"),
    (["--task-options", '{"batch_size": "big"}'], "--task-options"),
    (["--task-options", "{not json"], "--task-options"),
    (["--task-options", "[1, 2]"], "--task-options"),
    (["--task", "no_such_task"], "--task"),
    (["--optimizers", "adam,,adam"], "--optimizers"),
    (["--optimizers", "adam,adam"], "--optimizers"),
    (["--optimizers", "MISSING"], "MISSING"),
])
def test_evaluate_rejects_bad_flags(argv, named, files, capsys):
  argv = [files["missing"] if a == "MISSING" else a for a in argv]
  named = files["missing"] if named == "MISSING" else named
  out = ["--out", str(files["tmp"] / "eval")]
  assert named in error_of("unf-evaluate", [*EVALUATE, *out, *argv], capsys)
  assert not (files["tmp"] / "eval").exists()


def test_evaluate_rejects_an_out_that_is_a_file(files, capsys):
  err = error_of("unf-evaluate", [*EVALUATE, "--out", files["file"]], capsys)
  assert "--out" in err and files["file"] in err


@pytest.mark.parametrize("argv, named", [
    (["--outer-steps", "-3"], "--outer-steps"),
    (["--outer-steps", "five"], "--outer-steps"),
    (["--sigma", "0"], "--sigma"),
    (["--task", "no_such_task"], "--task"),
    (["--config", "MISSING"], "MISSING"),
    (["--config", "JSON:{\"outer_steps\": \"five\"}"], "run.json"),
    (["--config", "JSON:{\"outer_steps\": 5"], "run.json"),
    (["--config", "JSON:[1, 2]"], "run.json"),
    (["--config", "YAML:outer_steps: [5\n"], "run.yaml"),
    (["--config", "YAML:bogus: 1\n"], "run.yaml"),
    (["--task", "tiny_mlp", "--task-options", '{"hiden": 3}'], "--task-options"),
    (["--task", "tiny_mlp", "--task-options", '{"spec": "wrong"}'], "--task-options"),
    (["--task", "tiny_mlp", "--task-options", "[1]"], "--task-options"),
    (["--config", "YAML:task: tiny_mlp\ntask_options: {hiden: 3}\n"], "run.yaml"),
])
def test_meta_train_rejects_bad_flags_and_config_files(argv, named, files, capsys):
  for index, value in enumerate(argv):
    if value == "MISSING":
      argv[index] = named = files["missing"]
    elif value.startswith(("JSON:", "YAML:")):
      suffix = "json" if value.startswith("JSON:") else "yaml"
      argv[index] = config_file(files["tmp"], f"run.{suffix}", value[5:])
  out = files["tmp"] / "run"
  err = error_of("unf-meta-train", [*argv, "--out", str(out), "--quiet"], capsys)
  assert named in err
  assert not out.exists()


def test_meta_train_rejects_an_out_that_is_a_file(files, capsys):
  assert "--out" in error_of("unf-meta-train", ["--out", files["file"]], capsys)


def test_plot_rejects_bad_inputs(files, capsys):
  tmp = files["tmp"]
  (tmp / "bad_eval").mkdir()
  (tmp / "bad_eval" / "curves.csv").write_text("optimizer,seed,step,train_loss\nadam,x,1,0.5\n")
  (tmp / "bad_run").mkdir()
  (tmp / "bad_run" / "metrics.jsonl").write_text('{"step": 1, "meta_loss": 0.5}\nnot json\n')
  cases = [
      ([files["missing"]], files["missing"]),
      ([files["empty_dir"]], "curves.csv"),
      ([str(tmp / "bad_eval")], "line 2"),
      (["--meta", files["empty_dir"]], "metrics.jsonl"),
      (["--meta", str(tmp / "bad_run")], "line 2"),
      (["--compare", files["file"]], files["file"]),
      ([str(tmp / "bad_eval"), "--smooth", "0"], "--smooth"),
      ([str(tmp / "bad_eval"), "--out", files["empty_dir"]], "--out"),
      ([str(tmp / "bad_eval"), "--meta", str(tmp / "bad_run")], "--meta"),
      ([], "evaluation directory"),
  ]
  for argv, named in cases:
    assert named in error_of("unf-plot", argv, capsys), argv


def test_predict_generalization_rejects_bad_inputs(files, capsys):
  base = ["--predictor", "deepset"]
  cases = [
      (["--zoo", files["missing"]], files["missing"]),
      (["--zoo", files["file"]], "--zoo"),
      (["--zoo", files["zoo_without_split"]], "split"),
      (["--zoo", files["zoo"], "--seeds", "0"], "--seeds"),
      (["--zoo", files["zoo"], "--first-seed", "-1"], "--first-seed"),
      (["--zoo", files["zoo"], "--epochs", "0"], "--epochs"),
      (["--zoo", files["zoo"], "--learning-rate", "-1"], "--learning-rate"),
      (["--zoo", files["zoo"], "--identity-share", "1.5"], "--identity-share"),
      (["--zoo", files["zoo"], "--batch-size", "5"], "--batch-size"),  # 4 training models
      (["--zoo", files["zoo"], "--out", files["file"]], "--out"),
      (["--zoo", files["zoo"], "--predictor", "lstm"], "--predictor"),
  ]
  for argv, named in cases:
    assert named in error_of("unf-predict-generalization", [*base, *argv], capsys), argv


def test_classify_inrs_rejects_bad_inputs(files, capsys):
  cases = [
      (["--inrs", files["missing"]], files["missing"]),
      (["--inrs", files["zoo"]], "--inrs"),  # an npz, but not of INRs
      (["--inrs", files["inrs"], "--seeds", "0"], "--seeds"),
      (["--inrs", files["inrs"], "--batch-size", "5"], "--batch-size"),
      (["--inrs", files["inrs"], "--classifier", "lstm"], "--classifier"),
      (["--inrs", files["inrs"], "--mlp-width", "0"], "--mlp-width"),
      (["--inrs", files["inrs"], "--out", files["file"]], "--out"),
  ]
  for argv, named in cases:
    assert named in error_of("unf-classify-inrs", argv, capsys), argv


def test_make_zoo_rejects_bad_inputs(files, capsys):
  other = files["tmp"] / "other_build"
  other.mkdir()
  (other / "config.json").write_text(json.dumps({"num_models": 3}))
  out = ["--out", str(files["tmp"] / "zoo")]
  cases = [
      ([*out, "--num-models", "5"], "--num-models"),
      ([*out, "--hidden", "0"], "--hidden"),
      ([*out, "--max-digits", "12"], "--max-digits"),
      ([*out, "--seed", "-1"], "--seed"),
      (["--out", files["file"]], "--out"),
      (["--out", str(other), "--num-models", "10"], "another configuration"),
  ]
  for argv, named in cases:
    assert named in error_of("unf-make-zoo", argv, capsys), argv
  assert not (files["tmp"] / "zoo").exists()


def test_make_inrs_rejects_bad_inputs(files, capsys):
  out = ["--out", str(files["tmp"] / "inrs")]
  cases = [
      ([*out, "--train", "0"], "--train"),
      ([*out, "--hidden", "32", "0"], "--hidden"),
      ([*out, "--learning-rate", "0"], "--learning-rate"),
      ([*out, "--chunk-size", "-1"], "--chunk-size"),
      ([*out, "--data-dir", files["missing"]], "--data-dir"),
      (["--out", files["file"]], "--out"),
  ]
  for argv, named in cases:
    assert named in error_of("unf-make-inrs", argv, capsys), argv
  assert not (files["tmp"] / "inrs").exists()


def _help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
  formatter = parser._get_formatter()  # pylint: disable=protected-access
  formatter.add_argument(action)
  return formatter.format_help()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_flag_has_help_and_one_default(command):
  parser = COMMANDS[command][0]()
  checked = 0
  for action in parser._actions:  # pylint: disable=protected-access
    if isinstance(action, argparse._HelpAction):  # pylint: disable=protected-access
      continue
    assert action.help and action.help.strip(), f"{command} {action.option_strings} has no help"
    text = " ".join(_help_of(parser, action).split()).lower()
    assert text.count("default") <= 1, f"{command}: {text}"
    if (action.option_strings and action.default is not None and action.default is not False
        and action.default != argparse.SUPPRESS):
      assert text.count("(default: ") == 1, f"{command}: {text}"
    checked += 1
  assert checked >= 3
  assert "(default: None)" not in parser.format_help()


@pytest.mark.parametrize("command", ["unf-meta-train", "unf-evaluate"])
def test_list_tasks_prints_every_registered_task(command, capsys):
  with pytest.raises(SystemExit) as exit:
    COMMANDS[command][1](["--list-tasks"])  # works without the required flags
  assert exit.value.code == 0
  lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
  registered = tasks.registered_tasks()
  assert set(registered) <= set(lines)
  for name, description in registered.items():
    assert description and lines[name].endswith(description)


def test_installed_entry_points_run_these_commands():
  scripts = {point.name: point for point in importlib.metadata.entry_points(group="console_scripts")
             if point.name in COMMANDS}
  assert set(scripts) == set(COMMANDS)
  for name, point in scripts.items():
    assert point.load() is COMMANDS[name][1], name
