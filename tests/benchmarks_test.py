"""The benchmarks run (smallest spec, one repeat) and print their ratio columns."""

from unf_lopt.evaluate.benchmarks import bench_layers, bench_meta_train, bench_optimizer, bench_tasks


def test_layer_benchmark_runs(capsys):
  bench_layers.main(["--specs", "mlp", "--repeats", "1"])
  out = capsys.readouterr().out
  assert "UNF/DS" in out and out.strip().splitlines()[-1].startswith("mlp")


def test_optimizer_benchmark_runs(capsys):
  bench_optimizer.main(["--specs", "mlp", "--repeats", "1"])
  last = capsys.readouterr().out.strip().splitlines()[-1]
  assert last.startswith("mlp") and last.endswith("x")


def test_task_benchmark_runs(capsys):
  bench_tasks.main(["--tasks", "tiny_mlp,tiny_rnn", "--repeats", "2"])
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[-3].split() == ["task", "step/s", "batches/s", "data/step"]
  assert [line.split()[0] for line in lines[-2:]] == ["tiny_mlp", "tiny_rnn"]
  assert all(float(line.split()[-1]) > 0 for line in lines[-2:])


def test_meta_train_benchmark_runs(capsys):
  bench_meta_train.main(["--task", "tiny_mlp", "--update-nets", "sgdm", "--devices", "1,2",
                         "--num-runs", "4", "--trunc-length", "3", "--steps", "1"])
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[-3].split()[:2] == ["update", "net"]
  rows = [line.split() for line in lines[-2:]]
  assert [row[:2] for row in rows] == [["sgdm", "1"], ["sgdm", "2"]]
  assert rows[0][-1] == "1.00x"
