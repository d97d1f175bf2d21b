"""The benchmarks run (smallest spec, one repeat) and print their ratio columns."""

import jax
import pytest

from unf_lopt import tasks
from unf_lopt.evaluate.benchmarks import (bench_layers, bench_meta_train, bench_optimizer,
                                          bench_real_models, bench_tasks)


def task_parameter_count(name):
  shapes = jax.eval_shape(tasks.get_task(name).init, jax.random.PRNGKey(0))
  return sum(leaf.size for leaf in jax.tree.leaves(shapes))


def test_layer_benchmark_times_the_tasks_own_network(capsys):
  bench_layers.main(["--specs", "mlp", "--repeats", "1"])
  out = capsys.readouterr().out
  last = out.strip().splitlines()[-1].split()
  assert "UNF/DS" in out and last[0] == "mlp"
  assert int(last[1]) == task_parameter_count("mlp_fmnist")  # entries: 64*32+32+32*10+10


def test_optimizer_benchmark_times_the_tasks_own_network(capsys):
  bench_optimizer.main(["--specs", "tiny_rnn", "--repeats", "1"])
  lines = capsys.readouterr().out.strip().splitlines()
  last = lines[-1]
  assert last.startswith("tiny_rnn") and last.endswith("x")
  # The compile columns close the row: two positive ratios to Adam's compile.
  assert lines[-2].split()[-4:] == ["unf", "comp", "ds", "comp"]
  assert all(float(cell.rstrip("x")) > 0 for cell in last.split()[-2:])
  assert int(last.split()[1]) == task_parameter_count("tiny_rnn")


def test_task_benchmark_runs(capsys):
  bench_tasks.main(["--tasks", "tiny_mlp,tiny_rnn", "--repeats", "2"])
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[-3].split() == ["task", "step/s", "batches/s", "data/step"]
  assert [line.split()[0] for line in lines[-2:]] == ["tiny_mlp", "tiny_rnn"]
  assert all(float(line.split()[-1]) > 0 for line in lines[-2:])


@pytest.mark.slow
def test_meta_train_benchmark_runs(capsys):
  bench_meta_train.main(["--task", "tiny_mlp", "--update-nets", "sgdm", "--devices", "1,2",
                         "--processes", "1,2", "--num-runs", "4", "--trunc-length", "3",
                         "--steps", "1"])
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[-4].split()[:3] == ["task", "update", "net"]
  rows = [line.split() for line in lines[-3:]]
  # task, update net, conv impl ("-": the task has none), devices, processes; one device is
  # not split over two processes.
  assert [row[:5] for row in rows] == [["tiny_mlp", "sgdm", "-", "1", "1"],
                                       ["tiny_mlp", "sgdm", "-", "2", "1"],
                                       ["tiny_mlp", "sgdm", "-", "2", "2"]]
  # "vs 1 device" is each row's outer/s over the 1-device row's (both as printed, 2 decimals).
  outer_per_second = [float(row[6]) for row in rows]
  ratios = [float(row[8].rstrip("x")) for row in rows]
  # Memory is planned on one device in one process only; it does not grow with the horizon.
  assert float(rows[0][-2]) > 0 and rows[0][-1] == "1.00x"
  assert [row[-2:] for row in rows[1:]] == [["-", "-"], ["-", "-"]]
  for outer, ratio in zip(outer_per_second, ratios):
    assert ratio == pytest.approx(outer / outer_per_second[0], rel=0.01, abs=0.006)


@pytest.mark.slow
def test_meta_train_benchmark_times_each_conv_impl(capsys):
  bench_meta_train.main(["--task", "tiny_cnn", "--update-nets", "sgdm", "--devices", "1",
                         "--num-runs", "2", "--trunc-length", "2", "--steps", "1",
                         "--repeats", "1"])
  rows = [line.split() for line in capsys.readouterr().out.strip().splitlines()[-2:]]
  assert [row[:5] for row in rows] == [["tiny_cnn", "sgdm", "lax", "1", "1"],
                                       ["tiny_cnn", "sgdm", "patches", "1", "1"]]
  # "vs first" is each row's outer/s over the lax row's.
  outer_per_second = [float(row[6]) for row in rows]
  assert float(rows[0][9].rstrip("x")) == 1.0
  assert all(float(row[10]) > 0 and row[11] == "1.00x" for row in rows)
  assert float(rows[1][9].rstrip("x")) == pytest.approx(outer_per_second[1] / outer_per_second[0],
                                                         rel=0.01, abs=0.006)


@pytest.mark.slow
def test_real_model_benchmark_prints_counts_and_ratios(capsys):
  bench_real_models.main(["--models", "flatten_cnn", "--repeats", "1"])
  row = capsys.readouterr().out.strip().splitlines()[-1].split()
  assert row[0] == "flatten_cnn" and int(row[1]) == 824_458
  legacy, bounded, linked = int(row[3]), int(row[4]), int(row[5])
  assert legacy > 100_000_000 > 100_000 > bounded > linked
  assert row[-4].endswith("x") and row[-1].endswith("x")  # bounded and deepset ratios to Adam


def test_a_paper_suffix_gives_the_authors_spec():
  from unf_lopt.evaluate.benchmarks import weight_spaces  # pylint: disable=g-import-not-at-top
  true_params, true_spec = weight_spaces.weight_space("cnn")
  paper_params, paper_spec = weight_spaces.weight_space("cnn:paper")
  assert jax.tree.map(lambda a: a.shape, true_params) == jax.tree.map(lambda a: a.shape,
                                                                      paper_params)
  expected = tasks.get_task("cnn_cifar10", spec="paper").spec(paper_params)
  assert paper_spec == expected and paper_spec != true_spec
