"""The training loop (harness/worker.py train_worker) run in this process, one rank, with Ray Train's calls
answered here: what a trial does when its loss diverges or its disk fills, and the rows the results make of
what it leaves. (Ray Train itself: tests/test_ray_sweep.py and tests/test_drills.py, where a worker dies,
a driver is killed, a node is lost.)"""

import json
import math
import os
from types import SimpleNamespace

import pytest
import torch

from condgen_bench import datasets
from condgen_bench.harness import worker as worker_module
from condgen_bench.harness.config import to_dict
from condgen_bench.harness.evaluation.reference import prepare_reference
from condgen_bench.harness.results import TrialOutcome, _trial_rows, training_progress
from condgen_bench.reports.run_folder import faults, layout, storage
from test_ray_sweep import tiny_experiment


@pytest.fixture
def train_in_process(monkeypatch, tmp_path):
    """run(config, trial_id) -> the metrics the loop reported, in order: train_worker on rank 0 of 1 on the
    CPU, with no Ray (no checkpoint to resume; a report's checkpoint folder is dropped)."""
    import ray.train
    import ray.train.torch

    reports = []
    monkeypatch.setattr(ray.train, "get_context", lambda: SimpleNamespace(get_world_rank=lambda: 0,
                                                                          get_world_size=lambda: 1))
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: None)
    monkeypatch.setattr(ray.train, "report", lambda metrics, checkpoint=None: reports.append(metrics))
    monkeypatch.setattr(ray.train.torch, "get_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(ray.train.torch, "prepare_model", lambda model, **_: model)
    monkeypatch.setattr(worker_module.ray, "get", lambda value: value)  # the data and reference, not refs
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # this process's threads stay as they are

    def run(config, trial_id: str) -> list[dict]:
        data = datasets.load(config.data)
        reference = prepare_reference(data, config.eval, str(tmp_path / "cache"), log=lambda *_: None)
        worker_module.train_worker({"loop": worker_module.LoopConfig(to_dict(config), trial_id, str(tmp_path / "run"),
                                                                     data, reference, threads=1)})
        return reports

    return run


def rows_of(run_dir: str, config, trial_id: str, result) -> list[dict]:
    """The results rows of a trial whose Tune result is ``result`` (metrics, error), as the sweep writes them."""
    spec = datasets.load(config.data).spec()
    diverged = layout.diverged_file(run_dir, trial_id)
    trial = TrialOutcome(trial_id, result, training_progress(run_dir, trial_id, None),
                         json.loads(storage.read_bytes(diverged)) if storage.exists(diverged) else None)
    rows, _ = _trial_rows(run_dir, trial, to_dict(config), {}, spec)
    return rows


def test_a_diverging_trial_stops_at_once_evaluates_nothing_and_is_a_diverged_row(train_in_process, tmp_path):
    """lr 1e6 makes the loss NaN within a few steps: the loop writes the epoch's training figures and a
    divergence note, reports once, and stops: no evaluation, no checkpoint of the broken weights. Its row is
    "diverged" with the epoch and the reason, its sample figures missing for that reason. Before it trains, the
    loop removes the temporary files a killed writer of the trial left (another trial's it leaves alone)."""
    config = tiny_experiment(tmp_path)
    config.model.lr = 1e6
    run_dir = str(tmp_path / "run")
    mine, others = (tmp_path / "run" / "artifacts" / trial / "epoch_0002" / "eval.json.tmp4242"
                    for trial in ("t_diverged", "t_other"))
    for planted in (mine, others):
        planted.parent.mkdir(parents=True)
        planted.write_text('{"half')
    reports = train_in_process(config, "t_diverged")
    assert not mine.exists() and others.exists()
    [report] = reports
    assert report["diverged"] and report["epoch"] == 1 and not report["evaluated"]
    note = json.loads(storage.read_bytes(layout.diverged_file(run_dir, "t_diverged")))
    assert note["epoch"] == 1 and "loss became nan" in note["reason"]
    assert not os.path.exists(layout.epoch_dir(run_dir, "t_diverged", 1))  # nothing evaluated

    [row] = rows_of(run_dir, config, "t_diverged", SimpleNamespace(error=None, metrics=report))
    assert row["status"] == "diverged" and row["epoch"] == 1 and "loss became nan" in row["status_reason"]
    assert math.isnan(row.get("sample_accuracy", math.nan)) and "diverged" in json.loads(row["missing"])["all"]


def test_a_full_disk_at_an_evaluation_record_fails_the_trial_naming_the_file(train_in_process, tmp_path, monkeypatch):
    """The disk is full when epoch 1's eval.json is written: the loop raises naming the file, and leaves no
    temporary file; the trial's row is an error row with that reason."""
    config = tiny_experiment(tmp_path)
    monkeypatch.setenv(faults.ENV, json.dumps({"at": "write", "path": "t_full/epoch_0001/eval.json", "do": "enospc"}))
    with pytest.raises(OSError, match=r"could not write .*t_full/epoch_0001/eval\.json") as failure:
        train_in_process(config, "t_full")
    run_dir = str(tmp_path / "run")
    assert not [p for p in (tmp_path / "run").rglob("*.tmp*")]
    [row] = rows_of(run_dir, config, "t_full", SimpleNamespace(error=failure.value, metrics={"epoch": 0}))
    assert row["status"] == "error" and "could not write" in row["status_reason"] and "eval.json" in row["status_reason"]
