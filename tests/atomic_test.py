"""Tests for unf_lopt.atomic: the content lands, a failure keeps the old content, all is fsynced."""

import os
import stat

import numpy as np
import pytest

from unf_lopt import atomic


class Interrupted(Exception):
  """Stands for a crash inside a writer."""


@pytest.fixture
def fsyncs(monkeypatch):
  """Records every ``os.fsync`` as ``"file"`` or ``"dir"`` (and still syncs)."""
  calls = []
  real_fsync = os.fsync

  def counting_fsync(descriptor):
    calls.append("dir" if stat.S_ISDIR(os.fstat(descriptor).st_mode) else "file")
    real_fsync(descriptor)
  monkeypatch.setattr(atomic.os, "fsync", counting_fsync)
  return calls


def test_write_atomic_writes_text_and_bytes(tmp_path):
  path = tmp_path / "new" / "config.json"  # the directory is created
  atomic.write_atomic(path, '{"a": 1}\n')
  assert path.read_text() == '{"a": 1}\n'
  atomic.write_atomic(path, b"\x00\x01")
  assert path.read_bytes() == b"\x00\x01"
  assert sorted(os.listdir(path.parent)) == ["config.json"]


def test_written_file_has_ordinary_permissions(tmp_path):
  umask = os.umask(0o022)
  try:
    atomic.write_atomic(tmp_path / "a.txt", "x")
  finally:
    os.umask(umask)
  assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_atomic_open_takes_a_numpy_archive_under_its_own_name(tmp_path):
  path = tmp_path / "zoo.npz"
  with atomic.atomic_open(path) as handle:
    np.savez(handle, weights=np.arange(3))
  with np.load(path) as archive:
    np.testing.assert_array_equal(archive["weights"], np.arange(3))
  assert sorted(os.listdir(tmp_path)) == ["zoo.npz"]


def test_atomic_open_text_mode_passes_open_arguments(tmp_path):
  path = tmp_path / "table.csv"
  with atomic.atomic_open(path, "w", newline="") as handle:
    handle.write("a,b\r\n")
  assert path.read_bytes() == b"a,b\r\n"


def test_atomic_open_rejects_a_non_write_mode(tmp_path):
  with pytest.raises(ValueError, match="mode must be 'w' or 'wb', got 'a'"):
    with atomic.atomic_open(tmp_path / "log.txt", "a"):
      pass


@pytest.mark.parametrize("error", [Interrupted, KeyboardInterrupt])
def test_failed_file_write_keeps_the_previous_file_and_no_staging(tmp_path, error):
  path = tmp_path / "metrics.jsonl"
  path.write_text("old\n")
  with pytest.raises(error):
    with atomic.atomic_open(path, "w") as handle:
      handle.write("half of the new")
      raise error()
  assert path.read_text() == "old\n"
  assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl"]


def test_file_and_its_directory_are_fsynced(tmp_path, fsyncs):
  atomic.write_atomic(tmp_path / "a.txt", "content")
  # The data before the rename, the directory entry after it.
  assert fsyncs == ["file", "dir"]


def test_failed_file_write_syncs_nothing_and_renames_nothing(tmp_path, fsyncs, monkeypatch):
  renames = []
  monkeypatch.setattr(atomic.os, "replace", lambda *args: renames.append(args))
  with pytest.raises(Interrupted):
    with atomic.atomic_open(tmp_path / "a.txt"):
      raise Interrupted()
  assert fsyncs == [] and renames == []


def test_directory_content_lands_and_replaces_the_old_directory(tmp_path):
  path = tmp_path / "checkpoint"
  path.mkdir()
  (path / "stale.txt").write_text("from the old checkpoint")
  with atomic.atomic_directory(path) as staging:
    (staging / "params.bin").write_bytes(b"new")
    (staging / "nested").mkdir()
    (staging / "nested" / "info.json").write_text("{}")
  assert sorted(p.relative_to(path).as_posix() for p in path.rglob("*")) == [
      "nested", "nested/info.json", "params.bin"]
  assert (path / "params.bin").read_bytes() == b"new"
  assert sorted(os.listdir(tmp_path)) == ["checkpoint"]  # no staging, no retired copy


@pytest.mark.parametrize("error", [Interrupted, KeyboardInterrupt])
def test_failed_directory_write_keeps_the_previous_directory_and_no_staging(tmp_path, error):
  path = tmp_path / "checkpoint"
  path.mkdir()
  (path / "params.bin").write_bytes(b"old")
  with pytest.raises(error):
    with atomic.atomic_directory(path) as staging:
      (staging / "params.bin").write_bytes(b"new")
      raise error()
  assert os.listdir(path) == ["params.bin"] and (path / "params.bin").read_bytes() == b"old"
  assert sorted(os.listdir(tmp_path)) == ["checkpoint"]


def test_failure_between_the_two_renames_restores_the_previous_directory(tmp_path, monkeypatch):
  path = tmp_path / "checkpoint"
  path.mkdir()
  (path / "params.bin").write_bytes(b"old")
  real_replace = os.replace

  def replace_failing_on_the_new_directory(source, target):
    if str(source).endswith(".staging"):
      raise OSError("disk full")
    real_replace(source, target)
  monkeypatch.setattr(atomic.os, "replace", replace_failing_on_the_new_directory)
  with pytest.raises(OSError, match="disk full"):
    with atomic.atomic_directory(path) as staging:
      (staging / "params.bin").write_bytes(b"new")
  assert (path / "params.bin").read_bytes() == b"old"
  assert sorted(os.listdir(tmp_path)) == ["checkpoint"]


def test_every_file_and_directory_is_fsynced(tmp_path, fsyncs):
  with atomic.atomic_directory(tmp_path / "checkpoint") as staging:
    (staging / "a.bin").write_bytes(b"a")
    (staging / "nested").mkdir()
    (staging / "nested" / "b.bin").write_bytes(b"b")
  # a.bin, nested/b.bin; nested/, the staging directory; the parent after the rename.
  assert sorted(fsyncs) == ["dir", "dir", "dir", "file", "file"]
  assert fsyncs[-1] == "dir"
