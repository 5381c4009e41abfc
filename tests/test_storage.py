"""Run files are written whole or not at all (reports/storage.py)."""

import errno
import os

import pytest

from reports import storage


def test_a_failed_write_keeps_the_old_file_leaves_no_temporary_and_names_the_path(tmp_path, monkeypatch):
    path = str(tmp_path / "run" / "results.parquet")
    storage.write_bytes(path, b"old")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match=r"could not write .*results\.parquet: No space left") as failure:
        storage.write_bytes(path, b"new")
    assert failure.value.errno == errno.ENOSPC
    assert storage.read_bytes(path) == b"old"
    assert os.listdir(tmp_path / "run") == ["results.parquet"]


def test_a_write_replaces_the_whole_file(tmp_path):
    path = str(tmp_path / "eval.json")
    storage.write_bytes(path, b"first, longer")
    storage.write_bytes(path, b"second")
    assert storage.read_bytes(path) == b"second" and os.listdir(tmp_path) == ["eval.json"]
