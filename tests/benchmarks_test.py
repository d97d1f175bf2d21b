"""The benchmarks run (smallest spec, one repeat) and print their ratio columns."""

from evaluate import bench_layers, bench_optimizer


def test_layer_benchmark_runs(capsys):
  bench_layers.main(["--specs", "mlp", "--repeats", "1"])
  out = capsys.readouterr().out
  assert "UNF/DS" in out and out.strip().splitlines()[-1].startswith("mlp")


def test_optimizer_benchmark_runs(capsys):
  bench_optimizer.main(["--specs", "mlp", "--repeats", "1"])
  last = capsys.readouterr().out.strip().splitlines()[-1]
  assert last.startswith("mlp") and last.endswith("x")
