"""Dataset preparation into the tfds layout and loading, on tiny locally made files."""

import gzip
import io
import lzma
import tarfile

import numpy as np
import pytest

from unf_lopt.tasks import cli, data, tokenizers


def write_idx(path, array, compress=True):
  """An IDX file written from the format's definition (independent of `read_idx`)."""
  header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
      int(n).to_bytes(4, "big") for n in array.shape)
  payload = header + array.astype(np.uint8).tobytes()
  if compress:
    path = path.with_name(path.name + ".gz")
    path.write_bytes(gzip.compress(payload))
  else:
    path.write_bytes(payload)
  return path


def fake_fashion_mnist(directory, sizes=(("train", 30), ("t10k", 10))):
  rng = np.random.default_rng(0)
  arrays = {}
  for prefix, size in sizes:
    images = rng.integers(0, 256, (size, 28, 28), dtype=np.uint8)
    labels = (np.arange(size) % 10).astype(np.uint8)
    write_idx(directory / f"{prefix}-images-idx3-ubyte", images)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, compress=prefix == "t10k")
    arrays["train" if prefix == "train" else "test"] = (images, labels)
  return arrays


def rows(images, labels):
  """Order-free view of a split (tfds shuffles examples when it writes them)."""
  return sorted(image.tobytes() + bytes([label]) for image, label in zip(images, labels))


def test_read_idx_rejects_bad_files(tmp_path):
  array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
  np.testing.assert_array_equal(data.read_idx(write_idx(tmp_path / "a", array, False)), array)
  truncated = tmp_path / "b"
  truncated.write_bytes((tmp_path / "a").read_bytes()[:-3])
  with pytest.raises(data.DatasetSourceError, match="truncated"):
    data.read_idx(truncated)
  foreign = tmp_path / "c"
  foreign.write_bytes(b"PK\x03\x04 not an idx file")
  with pytest.raises(data.DatasetSourceError, match="magic"):
    data.read_idx(foreign)


def test_fashion_mnist_prepares_into_tfds_layout_and_loads_back(tmp_path):
  source = tmp_path / "idx"
  source.mkdir()
  arrays = fake_fashion_mnist(source)
  version_dir = data.prepare("fashion_mnist", source, tmp_path / "tfds")
  assert version_dir.name == "3.0.1" and (version_dir / "dataset_info.json").exists()
  assert list(version_dir.glob("*.array_record*"))
  assert data.is_prepared("fashion_mnist", tmp_path / "tfds")
  for split, (images, labels) in arrays.items():
    loaded = data.load_images("fashion_mnist", split, tmp_path / "tfds")
    assert loaded["image"].shape == (len(labels), 28, 28, 1)
    assert loaded["image"].dtype == np.uint8 and loaded["label"].dtype == np.int32
    assert rows(loaded["image"][..., 0], loaded["label"]) == rows(images, labels)
  # The layout is tfds's own: tfds.data_source reads it by name.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  source = tfds.data_source("fashion_mnist", data_dir=str(tmp_path / "tfds"), download=False)
  assert len(source["train"]) == 30 and len(source["test"]) == 10


def test_missing_idx_file_is_named(tmp_path):
  fake_fashion_mnist(tmp_path)
  (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
  with pytest.raises(data.DatasetSourceError, match="t10k-images-idx3-ubyte"):
    data.prepare("fashion_mnist", tmp_path, tmp_path / "tfds")


def test_cifar10_binary_release_is_decoded_channel_major(tmp_path):
  rng = np.random.default_rng(1)
  archive = tmp_path / "cifar-10-binary.tar.gz"
  expected = {}
  with tarfile.open(archive, "w:gz") as tar:
    for name, split in [(f"data_batch_{i}.bin", "train") for i in range(1, 6)] + \
                       [("test_batch.bin", "test")]:
      labels = rng.integers(0, 10, 3, dtype=np.uint8)
      planes = rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)  # [N, C, H, W]
      payload = b"".join(bytes([label]) + plane.tobytes() for label, plane in zip(labels, planes))
      info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
      info.size = len(payload)
      tar.addfile(info, io.BytesIO(payload))
      images, all_labels = expected.get(split, (np.zeros((0, 32, 32, 3), np.uint8), []))
      expected[split] = (np.concatenate([images, planes.transpose(0, 2, 3, 1)]),
                         list(all_labels) + list(labels))
  splits = data.read_cifar10_binary(archive)
  for split, (images, labels) in expected.items():
    np.testing.assert_array_equal(splits[split]["image"], images)
    np.testing.assert_array_equal(splits[split]["label"], labels)
  data.prepare("cifar10", archive, tmp_path / "tfds")
  loaded = data.load_images("cifar10", "train", tmp_path / "tfds")
  assert loaded["image"].shape == (15, 32, 32, 3)
  assert rows(loaded["image"], loaded["label"]) == rows(*expected["train"])


def test_pickled_cifar_release_is_refused_without_unpickling(tmp_path):
  archive = tmp_path / "cifar-10-python.tar.gz"
  with tarfile.open(archive, "w:gz") as tar:
    info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    info.size = 4
    tar.addfile(info, io.BytesIO(b"\x80\x04K."))
  with pytest.raises(data.DatasetSourceError, match="binary CIFAR-10 release"):
    data.read_cifar10_binary(archive)


def test_lm1b_from_text_files_and_fallback_switch(tmp_path):
  source = tmp_path / "text"
  source.mkdir()
  (source / "train.txt").write_text("first sentence.\nsecond one, with ünïcode.\n\nthird.\n")
  (source / "test.txt").write_text("a test sentence.\n")
  assert data.resolve_text_dataset("lm1b", tmp_path / "tfds") == "brown_corpus"
  data.prepare("lm1b", source, tmp_path / "tfds")
  assert data.resolve_text_dataset("lm1b", tmp_path / "tfds") == "lm1b"
  assert sorted(data.load_text("lm1b", "train", tmp_path / "tfds")) == \
         ["first sentence.", "second one, with ünïcode.", "third."]
  assert data.load_text("lm1b", "test", tmp_path / "tfds") == ["a test sentence."]


def test_missing_dataset_error_gives_the_exact_command(tmp_path):
  with pytest.raises(data.DatasetNotPreparedError) as error:
    data.load_text("lm1b", "train", tmp_path, auto_prepare=False)
  assert f"unf-data prepare lm1b --from DIR_WITH_train.txt_AND_test.txt --data-dir {tmp_path}" \
         in str(error.value)
  with pytest.raises(ValueError, match="preparable datasets"):
    data.prepare("imagenet", data_dir=tmp_path)


def test_shipped_brown_corpus_splits_by_document():
  splits = data.read_brown_corpus()
  assert len(splits["train"]) + len(splits["test"]) == 57_340
  assert 0.05 < len(splits["test"]) / 57_340 < 0.15
  assert splits["train"][0].startswith("The Fulton County Grand Jury said Friday")
  # Only stock phrases ("Yes.", "(2)") occur in both splits.
  assert len(set(splits["train"]) & set(splits["test"])) < 0.01 * len(splits["test"])
  with lzma.open(data.BROWN_CORPUS_FILE, "rt") as f:
    text = f.read()
  assert "/at" not in text and "/nn" not in text  # tags stripped


def test_brown_corpus_auto_prepares_on_first_use(tmp_path, capsys):
  sentences = data.load_text("brown_corpus", "test", tmp_path)
  assert "preparing brown_corpus" in capsys.readouterr().err
  assert sorted(sentences) == sorted(data.read_brown_corpus()["test"])
  assert data.is_prepared("brown_corpus", tmp_path)


def test_real_fashion_mnist_from_debian_package():
  if not data.DEBIAN_FASHION_MNIST_DIR.exists():
    pytest.skip(f"{data.DEBIAN_FASHION_MNIST_DIR} is absent: "
                "`apt-get install dataset-fashion-mnist` provides it")
  splits = data.read_fashion_mnist_idx(data.DEBIAN_FASHION_MNIST_DIR)
  assert splits["train"]["image"].shape == (60_000, 28, 28, 1)
  assert splits["test"]["image"].shape == (10_000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(splits["train"]["label"]), [6_000] * 10)
  np.testing.assert_array_equal(np.bincount(splits["test"]["label"]), [1_000] * 10)
  # The shipped tiny subset is the head of the real training split.
  tiny = data.load_images("tiny_fashion_mnist", "train")
  np.testing.assert_array_equal(tiny["image"], splits["train"]["image"][:512])


def run_cli(capsys, *argv):
  """``(exit status, stdout, stderr)`` of ``unf-data ARGV``."""
  try:
    status = cli.main(list(argv))
  except SystemExit as exit_:
    status = exit_.code
  captured = capsys.readouterr()
  return status, captured.out, captured.err


def listing_states(out):
  """``{dataset: the rest of its line}`` of ``unf-data list``."""
  return {line.split()[0]: line.split(None, 1)[1] for line in out.splitlines()}


def test_cli_prepares_then_lists_as_prepared(tmp_path, capsys):
  source = tmp_path / "idx"
  source.mkdir()
  fake_fashion_mnist(source)
  tfds_dir = str(tmp_path / "tfds")
  status, out, _ = run_cli(capsys, "prepare", "fashion_mnist", "--from", str(source),
                           "--data-dir", tfds_dir)
  assert status == 0 and "prepared fashion_mnist" in out
  status, out, _ = run_cli(capsys, "list", "--data-dir", tfds_dir)
  states = listing_states(out)
  assert status == 0 and set(states) == set(data.DATASETS)
  assert states["fashion_mnist"] == "image  available (prepared)"
  assert states["cifar10"].startswith("image  missing: unf-data prepare cifar10 --from ")


def test_cli_lists_shipped_and_embedded_datasets_as_available(tmp_path, capsys):
  status, out, _ = run_cli(capsys, "list", "--data-dir", str(tmp_path))
  states = listing_states(out)
  assert status == 0
  assert states["brown_corpus"] == "text   available (shipped, prepared on first use)"
  assert states["tiny_fashion_mnist"] == "image  available (embedded)"
  assert states["tiny_brown_corpus"] == "text   available (embedded)"
  assert states["lm1b"].startswith("text   missing: ")
  # test_brown_corpus_auto_prepares_on_first_use checks that "available" holds.


def test_fashion_mnist_is_available_exactly_where_debian_files_are(tmp_path, monkeypatch):
  from unf_lopt.tasks.data import store  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(store, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "absent")
  assert data.availability("fashion_mnist", tmp_path) == (False, "missing")
  with pytest.raises(data.DatasetNotPreparedError, match="apt-get install dataset-fashion-mnist"):
    data.load_images("fashion_mnist", "test", tmp_path / "tfds")
  monkeypatch.setattr(store, "DEBIAN_FASHION_MNIST_DIR", tmp_path)
  available, how = data.availability("fashion_mnist", tmp_path / "tfds")
  assert available and str(tmp_path) in how
  with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
    data.availability("mnist")


def test_an_interrupted_preparation_does_not_count_as_prepared(tmp_path):
  unfinished = tmp_path / "lm1b" / "incomplete.AB12CD_1.1.0"  # tfds's staging name
  unfinished.mkdir(parents=True)
  (unfinished / "dataset_info.json").write_text("{}")
  assert not data.is_prepared("lm1b", tmp_path)
  assert data.availability("lm1b", tmp_path) == (False, "missing")


def test_cli_ctrl_c_during_prepare_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(data, "prepare", interrupted)
  status, out, err = run_cli(capsys, "prepare", "brown_corpus", "--data-dir", str(tmp_path))
  assert status == 130 and out == ""
  assert err.strip().splitlines() == ["unf-data: interrupted; nothing was prepared"]


def test_cli_lists_every_registered_task(capsys):
  from unf_lopt.tasks import registry  # pylint: disable=g-import-not-at-top
  status, out, _ = run_cli(capsys, "tasks")
  names = [line.split()[0] for line in out.splitlines()]
  assert status == 0
  assert names[:-1] == list(registry.registered_tasks()) and names[-1] == "lo:NAME"
  assert "FashionMNIST" in out.splitlines()[names.index("tiny_mlp")]


@pytest.mark.parametrize("argv, named", [
    (["prepare", "imagenet"], "argument NAME: unknown dataset 'imagenet'"),
    (["prepare", "tiny_fashion_mnist"], "argument NAME: tiny_fashion_mnist is embedded"),
    (["prepare", "cifar10", "--from", "{tmp}/nope.tar.gz"], "argument --from: {tmp}/nope.tar.gz"),
    (["prepare", "fashion_mnist", "--from", "{tmp}/file"], "argument --from: {tmp}/file is a file"),
    (["prepare", "cifar10", "--from", "{tmp}"], "argument --from: {tmp} is a directory"),
    (["prepare", "cifar10", "--from", "{tmp}/file"], "argument --from: {tmp}/file is not a"),
    (["prepare", "brown_corpus", "--data-dir", "{tmp}/file"], "argument --data-dir: {tmp}/file"),
    (["list", "--data-dir", "{tmp}/file/below"], "argument --data-dir: {tmp}/file/below"),
    (["list", "--bogus"], "unrecognized arguments: --bogus"),
    ([], "required: COMMAND"),
])
def test_cli_bad_input_exits_2_with_one_line_naming_it(tmp_path, capsys, argv, named):
  (tmp_path / "file").write_text("not data")
  argv = [arg.format(tmp=tmp_path) for arg in argv]
  status, out, err = run_cli(capsys, *argv)
  assert status == 2 and out == ""
  assert len(err.strip().splitlines()) == 1 and named.format(tmp=tmp_path) in err
  assert not (tmp_path / "file").is_dir() and list(tmp_path.iterdir()) == [tmp_path / "file"]


def help_entries(text):
  """``{invocation: help}`` of every argument in an argparse help text."""
  entries, current = {}, None
  for line in text.splitlines():
    if not line.startswith("  "):
      current = None  # a section title or the description
      continue
    if current is None or len(line) - len(line.lstrip()) <= 4:
      invocation, _, help_text = line.strip().partition("  ")
      current = invocation
      entries[current] = help_text.strip()
    else:
      entries[current] = (entries[current] + " " + line.strip()).strip()
  return entries


@pytest.mark.parametrize("command", [[], ["list"], ["prepare"], ["tasks"]])
def test_cli_help_describes_every_argument_with_at_most_one_default(capsys, command):
  status, out, _ = run_cli(capsys, *command, "--help")
  assert status == 0
  entries = help_entries(out[out.index("\n\n", out.index("usage:")):])
  expected = {"list": ["--data-dir DATA_DIR"], "prepare": ["NAME", "--from PATH",
                                                          "--data-dir DATA_DIR"]}
  assert set(expected.get(" ".join(command), [])) <= set(entries)
  for invocation, help_text in entries.items():
    assert help_text, f"{invocation} has no help"
    assert help_text.count("default") <= 1, f"{invocation}: {help_text}"
  if "--data-dir DATA_DIR" in entries:
    assert f"(default: {data.default_data_dir()})" in entries["--data-dir DATA_DIR"]


def test_byte_tokenizer_round_trip_and_sequence_layout():
  tokenizer = tokenizers.ByteTokenizer()
  text = "Ünïcode, ok."
  assert tokenizer.decode(tokenizer.encode(text)) == text
  assert min(tokenizer.encode(text)) >= tokenizers.NUM_SPECIAL
  rows = tokenizers.encode_sentences(tokenizer, ["abc", "abcdefgh"], length=4)
  assert rows.tolist() == [[100, 101, 102, 1, 0], [100, 101, 102, 103, 104]]


def test_shipped_sentencepiece_model():
  tokenizer = tokenizers.sentencepiece_tokenizer()
  assert tokenizer.vocab_size == 32_000
  sentence = data.read_brown_corpus()["test"][0]
  ids = tokenizer.encode(sentence)
  assert min(ids) >= tokenizers.NUM_SPECIAL and max(ids) < 32_000
  assert len(ids) < len(sentence.split()) * 2
  assert tokenizer.decode(ids) == sentence


@pytest.mark.slow
def test_other_sentencepiece_sizes_are_trained_once_and_cached(tmp_path):
  tokenizer = tokenizers.sentencepiece_tokenizer(1_000, cache_dir=tmp_path)
  assert tokenizer.vocab_size == 1_000
  assert (tmp_path / "brown_sp1000.model").exists()
  again = tokenizers.sentencepiece_tokenizer(1_000, cache_dir=tmp_path)
  assert again.encode("The jury said.") == tokenizer.encode("The jury said.")
