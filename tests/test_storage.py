"""Run files are written whole or not at all (reports/run_folder/storage.py)."""

import errno
import os

import pytest

from condgen_bench.reports.run_folder import storage


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


def test_files_written_together_are_all_kept_old_when_one_fails(tmp_path, monkeypatch):
    from condgen_bench.reports.run_folder import faults

    first, second = str(tmp_path / "results.parquet"), str(tmp_path / "history.parquet")
    storage.write_files({first: b"old results", second: b"old history"})
    monkeypatch.setenv(faults.ENV, '{"at": "write", "path": "history.parquet", "do": "enospc"}')
    with pytest.raises(OSError, match=r"could not write .*history\.parquet: No space left"):
        storage.write_files({first: b"new results", second: b"new history"})
    assert storage.read_bytes(first) == b"old results" and storage.read_bytes(second) == b"old history"
    assert sorted(os.listdir(tmp_path)) == ["history.parquet", "results.parquet"]


def test_a_writer_killed_before_its_rename_leaves_the_old_file_and_a_temporary_that_is_removed(tmp_path):
    """A process SIGKILLed between a temporary file's write and its rename (no cleanup runs): the old file is
    whole, and remove_temporaries takes away exactly the temporaries, at any depth, and no other file."""
    import subprocess
    import sys

    from condgen_bench.reports.run_folder import faults

    path = tmp_path / "run" / "artifacts" / "t1" / "epoch_0001" / "eval.json"
    storage.write_bytes(str(path), b"old record")
    keep = [tmp_path / "run" / name for name in ("notes.tmp", "a.tmp.txt", "b.tmpl", "c.tmp12x")]
    for other in keep:
        other.write_text("not a temporary")
    writer = ("from condgen_bench.reports.run_folder import storage; import sys; "
              "storage.write_bytes(sys.argv[1], b'new record, longer than the old')")
    env = {**os.environ, faults.ENV: '{"at": "write", "path": "eval.json", "do": "kill"}'}
    killed = subprocess.run([sys.executable, "-c", writer, str(path)], env=env)
    assert killed.returncode == -9
    [temporary] = path.parent.glob("eval.json.tmp*")
    assert path.read_bytes() == b"old record"
    assert storage.remove_temporaries(str(tmp_path / "run")) == [str(temporary)]
    assert os.listdir(path.parent) == ["eval.json"] and all(other.exists() for other in keep)
    assert storage.remove_temporaries(str(tmp_path / "absent")) == []


def test_results_and_history_out_of_step_are_refused_with_the_file_named(tmp_path):
    """A crash between the renames of results.parquet and history.parquet leaves one new and one old:
    the manifest written after both tells the report."""
    import pandas as pd

    from condgen_bench.harness.results import write_results
    from condgen_bench.reports.inputs import load_inputs

    run = str(tmp_path)
    write_results(pd.DataFrame({"trial_id": ["a"], "loss": [1.0]}), pd.DataFrame({"trial_id": ["a"], "epoch": [1]}), run)
    assert load_inputs(run).history["epoch"].tolist() == [1]
    pd.DataFrame({"trial_id": ["a"], "epoch": [2]}).to_parquet(tmp_path / "history.parquet")  # the next write, cut short
    with pytest.raises(ValueError, match=r"history\.parquet is not the file .*results_manifest\.json lists"):
        load_inputs(run)


def test_a_column_mixing_text_and_numbers_is_stored_as_text(tmp_path):
    """A protocol entry one family records as a count (DDPM's bpd_t_samples 32) and another as a sentence
    (the flow family's "not used") would stop Parquet: the writer stores such a column as text."""
    import pandas as pd

    from condgen_bench.harness.results import text_where_mixed

    frame = pd.DataFrame({"protocol.bpd_t_samples": [32, "not used: no Monte Carlo over t", None],
                          "sample_accuracy": [0.5, 0.25, float("nan")], "method": ["ddpm", "flow", "dcgan"]})
    with pytest.raises(Exception, match="bpd_t_samples"):
        frame.to_parquet(tmp_path / "raw.parquet")
    fixed = text_where_mixed(frame.copy())
    fixed.to_parquet(tmp_path / "results.parquet")
    back = pd.read_parquet(tmp_path / "results.parquet")
    assert back["protocol.bpd_t_samples"].tolist()[:2] == ["32", "not used: no Monte Carlo over t"]
    assert back["protocol.bpd_t_samples"].isna().tolist()[2] and back["sample_accuracy"].dtype == float
