"""unf-evaluate and unf-plot on a tiny task: files, columns, summaries recomputed from the CSVs."""

import csv
import json
import math
import pathlib

import numpy as np
import pytest

from unf_lopt.evaluate import evaluation
from unf_lopt.evaluate.commands import evaluate as evaluate_command
from unf_lopt.evaluate.commands import plot as plot_command
from unf_lopt.meta_train.trainer import MetaTrainConfig, MetaTrainer


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
  root = tmp_path_factory.mktemp("eval")
  config = MetaTrainConfig(task="tiny_mlp", update_net="unf", outer_steps=3, num_runs=2,
                           trunc_length=4, horizon=8)
  MetaTrainer(config, root / "unf_run", quiet=True).run()
  out = root / "eval"
  code = evaluate_command.main(["--task", "tiny_mlp", "--optimizers", f"{root / 'unf_run'},adam",
                          "--steps", "60", "--seeds", "3", "--eval-every", "25",
                          "--final-window", "10", "--out", str(out), "--quiet"])
  assert code == 0
  return root, out


def read(path):
  with open(path, newline="") as handle:
    return list(csv.DictReader(handle))


@pytest.mark.slow
def test_evaluation_files_and_columns(evaluated):
  _, out = evaluated
  curves = read(out / "curves.csv")
  assert list(curves[0]) == ["optimizer", "seed", "step", "train_loss"]
  assert len(curves) == 2 * 3 * 60
  test = read(out / "test.csv")
  assert list(test[0]) == ["optimizer", "seed", "step", "test_loss", "test_accuracy"]
  assert sorted({int(r["step"]) for r in test}) == [0, 25, 50, 60]
  assert all(0 <= float(r["test_accuracy"]) <= 1 for r in test)
  config = json.loads((out / "config.json").read_text())
  assert config["labels"] == ["unf_run", "adam"]


@pytest.mark.slow
def test_summary_is_recomputed_from_the_csv(evaluated):
  _, out = evaluated
  curves, test = read(out / "curves.csv"), read(out / "test.csv")
  summary = json.loads((out / "summary.json").read_text())
  finals = {}
  for name in ("unf_run", "adam"):
    per_seed = [[float(r["train_loss"]) for r in curves
                 if r["optimizer"] == name and r["seed"] == str(seed)] for seed in range(3)]
    finals[name] = [np.mean(losses[-10:]) for losses in per_seed]
  assert summary["threshold"] == pytest.approx(max(np.mean(f) for f in finals.values()), rel=1e-6)
  for row in summary["rows"]:
    values = finals[row["optimizer"]]
    assert row["final_train_loss"] == pytest.approx(np.mean(values), rel=1e-6)
    assert row["final_train_loss_se"] == pytest.approx(np.std(values, ddof=1) / math.sqrt(3),
                                                       rel=1e-5)
    last = [float(r["test_accuracy"]) for r in test
            if r["optimizer"] == row["optimizer"] and r["step"] == "60"]
    assert row["final_test_accuracy"] == pytest.approx(np.mean(last), rel=1e-6)
  summary_csv = read(out / "summary.csv")
  assert [r["optimizer"] for r in summary_csv] == ["unf_run", "adam"]


def test_moving_average_matches_a_loop():
  values = np.random.default_rng(0).normal(size=(2, 17))
  expected = np.asarray([[row[max(0, i - 4):i + 1].mean() for i in range(17)] for row in values])
  np.testing.assert_allclose(evaluation.moving_average(values, 5), expected)


@pytest.mark.slow
def test_plots_are_valid_images(evaluated, tmp_path):
  root, out = evaluated
  assert plot_command.main([str(out)]) == 0
  png = (out / "training_curves.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
  assert (out / "training_curves.pdf").read_bytes()[:4] == b"%PDF"
  assert plot_command.main(["--compare", str(out), str(out), "--out", str(tmp_path / "both")]) == 0
  assert (tmp_path / "both.png").stat().st_size > 20_000
  assert plot_command.main(["--meta", str(root / "unf_run"), "--out", str(tmp_path / "meta")]) == 0
  assert (tmp_path / "meta.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_bad_optimizer_entries_fail_before_compute(evaluated, tmp_path, capsys):
  root, _ = evaluated

  def error_of(argv):
    with pytest.raises(SystemExit) as exit:
      evaluate_command.main(argv)
    assert exit.value.code == 2
    return capsys.readouterr().err

  assert "not an unf-lopt checkpoint" in error_of(
      ["--task", "tiny_mlp", "--optimizers", str(tmp_path / "nothing"),
       "--out", str(tmp_path / "e"), "--quiet"])
  # A UNF optimizer trained on a 2-layer MLP does not fit the CNN's weight space.
  assert "another structure" in error_of(
      ["--task", "tiny_cnn", "--optimizers", str(root / "unf_run"),
       "--out", str(tmp_path / "e"), "--quiet"])
  assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_labelled_entries_name_the_curves_and_train_the_same(evaluated, tmp_path):
  root, out = evaluated
  labelled = tmp_path / "labelled"
  code = evaluate_command.main(["--task", "tiny_mlp", "--optimizers",
                                f"mine={root / 'unf_run'},reference=adam", "--steps", "60",
                                "--seeds", "3", "--eval-every", "25", "--final-window", "10",
                                "--out", str(labelled), "--quiet"])
  assert code == 0
  assert json.loads((labelled / "config.json").read_text())["labels"] == ["mine", "reference"]
  renamed = {"unf_run": "mine", "adam": "reference"}
  expected = [dict(row, optimizer=renamed[row["optimizer"]]) for row in read(out / "curves.csv")]
  got = read(labelled / "curves.csv")
  assert [r["optimizer"] for r in got] == [r["optimizer"] for r in expected]
  np.testing.assert_allclose([float(r["train_loss"]) for r in got],
                             [float(r["train_loss"]) for r in expected], rtol=1e-6)


def test_split_label_and_directories_whose_name_holds_an_equals_sign(tmp_path, monkeypatch):
  assert evaluation.split_label("unf=pretrained:unf_mlp_fmnist") == (
      "unf", "pretrained:unf_mlp_fmnist")
  assert evaluation.split_label("adam") == (None, "adam")
  assert evaluation.split_label("a b=adam") == (None, "a b=adam")  # not a label word
  monkeypatch.chdir(tmp_path)
  assert evaluation.split_label("lr=0.1") == ("lr", "0.1")
  pathlib.Path("lr=0.1").mkdir()  # an existing run directory keeps its whole name
  assert evaluation.split_label("lr=0.1") == (None, "lr=0.1")
  assert evaluation.optimizer_label("lr=0.1") == "lr=0.1"
  with pytest.raises(evaluation.OptimizerSpecError, match="two optimizers are called 'x'"):
    evaluation.load_optimizers(["x=adam", "x=adam"], None)


@pytest.mark.slow
def test_nominal_term_trains_like_the_learned_optimizer_with_beta_zero(evaluated, tmp_path):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import unf_lopt as U  # pylint: disable=g-import-not-at-top
  root, _ = evaluated
  lopt, meta = U.load_checkpoint(root / "unf_run" / "optimizer")
  # The independent reference: the whole learned optimizer, its update net still computed,
  # with beta = exp(-inf) = 0.
  U.save_checkpoint(tmp_path / "beta_zero", lopt, dict(meta, log_beta=jnp.float32(-jnp.inf)))
  out = tmp_path / "nominal"
  code = evaluate_command.main(["--task", "tiny_mlp", "--optimizers",
                                f"nominal:{root / 'unf_run'},{tmp_path / 'beta_zero'}",
                                "--steps", "40", "--seeds", "2", "--final-window", "10",
                                "--out", str(out), "--quiet"])
  assert code == 0
  assert json.loads((out / "config.json").read_text())["labels"] == ["unf_run_nominal",
                                                                     "beta_zero"]
  curves = read(out / "curves.csv")
  nominal = [float(r["train_loss"]) for r in curves if r["optimizer"] == "unf_run_nominal"]
  zero = [float(r["train_loss"]) for r in curves if r["optimizer"] == "beta_zero"]
  np.testing.assert_allclose(nominal, zero, rtol=1e-5)
  full = [float(r["train_loss"]) for r in read(evaluated[1] / "curves.csv")
          if r["optimizer"] == "unf_run" and int(r["step"]) <= 40 and int(r["seed"]) < 2]
  assert not np.allclose(nominal, full)  # the learned term did something
  with pytest.raises(evaluation.OptimizerSpecError, match="have a nominal term"):
    evaluation.load_optimizers(["nominal:adam"], None)


def test_a_diverged_seed_is_counted_and_left_out_of_the_means():
  rng = np.random.default_rng(0)
  train = rng.uniform(1.0, 2.0, size=(4, 30))
  train[2, 12:] = np.nan  # seed 2 diverged at step 13
  train[3, 25:] = np.inf  # seed 3 at step 26
  curves = {"diverging": {"train_loss": train, "test_step": np.asarray([0, 30]),
                          "test_loss": rng.uniform(1.0, 2.0, size=(4, 2)),
                          "test_accuracy": rng.uniform(0.2, 0.9, size=(4, 2))},
            "steady": {"train_loss": rng.uniform(1.0, 2.0, size=(4, 30)),
                       "test_step": np.asarray([0, 30]),
                       "test_loss": rng.uniform(1.0, 2.0, size=(4, 2)),
                       "test_accuracy": rng.uniform(0.2, 0.9, size=(4, 2))}}
  rows, threshold = evaluation.summarize(curves, final_window=5, threshold=None)
  diverging, steady = rows
  assert (diverging["seeds_diverged"], steady["seeds_diverged"]) == (2, 0)
  finals = [train[seed, -5:].mean() for seed in (0, 1)]
  assert diverging["final_train_loss"] == pytest.approx(np.mean(finals))
  assert diverging["final_train_loss_se"] == pytest.approx(np.std(finals, ddof=1) / math.sqrt(2))
  accuracy = curves["diverging"]["test_accuracy"][:2, -1]
  assert diverging["final_test_accuracy"] == pytest.approx(accuracy.mean())
  # The default threshold is the highest mean over the seeds kept, the diverging one's included.
  assert threshold == pytest.approx(max(diverging["final_train_loss"], steady["final_train_loss"]))
  text = evaluation.format_summary(rows, threshold, 5)
  assert "diverged" in text.splitlines()[0] and "2/4" in text.splitlines()[1]
  every_seed = {"all": dict(curves["diverging"], train_loss=np.full((2, 30), np.nan),
                            test_loss=np.full((2, 2), np.nan),
                            test_accuracy=np.full((2, 2), 0.1))}
  (row,), _ = evaluation.summarize(every_seed, final_window=5, threshold=1.0)
  assert row["seeds_diverged"] == 2 and math.isnan(row["final_train_loss"])


def test_plots_leave_a_diverged_seed_out_and_say_so():
  pytest.importorskip("matplotlib")
  from unf_lopt.evaluate import plots  # pylint: disable=g-import-not-at-top
  pyplot = plots._pyplot()  # pylint: disable=protected-access
  figure, axis = pyplot.subplots()
  runs = np.asarray([[2.0, 1.0, 0.5], [4.0, 2.0, 1.0], [3.0, np.nan, np.nan]])
  plots._band(axis, np.arange(3), runs, "deepset", smooth=1)  # pylint: disable=protected-access
  (line,) = axis.get_lines()
  assert line.get_label() == "deepset (1 diverged)"
  np.testing.assert_allclose(line.get_ydata(), [3.0, 1.5, 0.75])
  pyplot.close(figure)
