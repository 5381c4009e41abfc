"""Run folders (reports/run_folder/runs.py): two runs started in the same second get two folders, created exclusively;
"latest" refuses to guess between them; one driver per run, a second one refused with the owner's host and
process, a dead owner's lock taken over with a log line. No Ray (the sweeps that use them: tests/test_drills.py)."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from condgen_bench.reports.run_folder import runs
from condgen_bench.reports.run_folder.runs import RunLock, RunLockedError, latest_run, new_run_dir


def freeze_clock(monkeypatch, seconds: float = 1_796_000_000) -> None:
    """time.strftime without a time given formats ``seconds``: every run starts in that second."""
    real = time.strftime
    monkeypatch.setattr(time, "strftime", lambda fmt, *t: real(fmt, *(t or (time.localtime(seconds),))))


def test_two_runs_started_in_the_same_second_get_two_folders(tmp_path, monkeypatch):
    freeze_clock(monkeypatch)
    first, second = new_run_dir(str(tmp_path)), new_run_dir(str(tmp_path))
    assert first != second and os.path.isdir(first) and os.path.isdir(second)
    stamp = time.strftime(runs.STAMP)
    assert os.path.basename(first).startswith(stamp + "-") and os.path.basename(second).startswith(stamp + "-")
    with pytest.raises(ValueError, match="started in the same second"):  # "latest" would have to guess
        latest_run(str(tmp_path))


def test_a_taken_name_is_never_reused(tmp_path, monkeypatch):
    """The exclusive create: a suffix that is taken (here: forced to repeat) is skipped, not shared."""
    freeze_clock(monkeypatch)
    suffixes = iter(["aaaa", "aaaa", "bbbb"])
    monkeypatch.setattr(runs.secrets, "token_hex", lambda n: next(suffixes))
    first, second = new_run_dir(str(tmp_path)), new_run_dir(str(tmp_path))
    assert (os.path.basename(first)[-4:], os.path.basename(second)[-4:]) == ("aaaa", "bbbb")


def test_latest_is_the_newest_start(tmp_path, monkeypatch):
    freeze_clock(monkeypatch, 1_796_000_000)
    older = new_run_dir(str(tmp_path))
    freeze_clock(monkeypatch, 1_796_000_100)
    newer = new_run_dir(str(tmp_path))
    assert latest_run(str(tmp_path)) == newer != older
    with pytest.raises(FileNotFoundError, match="no run to resume"):
        latest_run(str(tmp_path / "nothing"))


def test_a_second_driver_is_refused_naming_the_owner_and_a_dead_owners_lock_is_taken_over(tmp_path):
    run_dir = new_run_dir(str(tmp_path))
    with RunLock(run_dir, log=lambda *_: None):
        owner = json.loads(open(os.path.join(run_dir, runs.LOCK_FILE)).read())
        assert (owner["host"], owner["pid"]) == (socket.gethostname(), os.getpid())
        with pytest.raises(RunLockedError, match=f"host {socket.gethostname()}, process {os.getpid()}"):
            RunLock(run_dir).acquire()
    assert not os.path.exists(os.path.join(run_dir, runs.LOCK_FILE))  # released

    # another live process's lock (here: a sleeping child's), then the same lock once that process is gone
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    lock_file = os.path.join(run_dir, runs.LOCK_FILE)
    with open(lock_file, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": child.pid, "started": time.time(), "renewed": time.time()}, f)
    with pytest.raises(RunLockedError, match=f"process {child.pid}"):
        RunLock(run_dir).acquire()
    child.kill()
    child.wait()
    lines = []
    with RunLock(run_dir, log=lines.append):
        assert json.loads(open(lock_file).read())["pid"] == os.getpid()
    assert lines == [f"taking over the lock of a driver that is gone (host {socket.gethostname()}, process "
                     f"{child.pid}): {lock_file}"]


def test_a_lock_on_another_host_is_stale_once_it_is_no_longer_renewed(tmp_path, monkeypatch):
    run_dir = new_run_dir(str(tmp_path))
    lock_file = os.path.join(run_dir, runs.LOCK_FILE)
    with open(lock_file, "w") as f:
        json.dump({"host": "node-7", "pid": 4242, "started": 0, "renewed": time.time()}, f)
    with pytest.raises(RunLockedError, match="host node-7, process 4242"):  # renewed just now: alive
        RunLock(run_dir).acquire()
    with open(lock_file, "w") as f:
        json.dump({"host": "node-7", "pid": 4242, "started": 0, "renewed": time.time() - runs.STALE_SECONDS - 1}, f)
    lines = []
    RunLock(run_dir, log=lines.append).acquire().release()
    assert "host node-7, process 4242" in lines[0]


def test_a_live_driver_renews_its_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "RENEW_SECONDS", 0.05)
    run_dir = new_run_dir(str(tmp_path))
    lock_file = os.path.join(run_dir, runs.LOCK_FILE)
    with RunLock(run_dir):
        first = json.loads(open(lock_file).read())["renewed"]
        deadline = time.monotonic() + 10
        while json.loads(open(lock_file).read())["renewed"] == first:
            assert time.monotonic() < deadline, "the lock was not renewed"
            time.sleep(0.02)


def test_a_checkpoint_carrying_a_pickled_callable_is_refused_naming_the_file(tmp_path):
    """Checkpoints load with weights_only=True: a state.pt that would call a function when unpickled (here
    os.getpid; it could be anything) is an unreadable checkpoint, refused with its path, never run."""
    import ray.train
    import torch

    from condgen_bench.harness.worker import train_checkpoint
    from condgen_bench.reports.run_folder.checkpoint import CheckpointError

    folder = tmp_path / "train" / "t0" / "checkpoint_000001"
    folder.mkdir(parents=True)
    torch.save({"method": {}, "epoch": 1, "hook": os.getpid}, folder / "state.pt")
    with pytest.raises(CheckpointError, match=r"unreadable checkpoint .*checkpoint_000001/state\.pt \(UnpicklingError"):
        train_checkpoint(ray.train.Checkpoint(str(folder))).load_or_older()


def test_a_moved_pbt_run_is_refused_because_its_scheduler_would_write_to_the_old_folder(tmp_path):
    """Ray restores PBT's scheduler from its pickle, with the folder the run was made in: a moved PBT run is
    refused before anything starts, naming both folders (any other run resumes wherever it is)."""
    from condgen_bench.harness.config import to_dict
    from condgen_bench.harness.sweep import run_sweep
    from test_ray_sweep import tiny_experiment

    config = tiny_experiment(tmp_path, scheduler="pbt")
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "config.json").write_text(json.dumps(to_dict(config)))
    (moved / "origin.json").write_text(json.dumps({"folder": str(tmp_path / "tiny" / "made-here")}))
    with pytest.raises(ValueError, match=r"a PBT run resumes only in the folder it was made in \(.*made-here\)"):
        run_sweep(config, resume=str(moved), log=lambda *_: None)
    assert not (moved / runs.LOCK_FILE).exists()


def test_a_deleted_trial_folder_is_an_error_naming_it_not_a_silent_fresh_start(tmp_path):
    """A trial whose epochs are recorded (artifacts/<trial>/history/) but whose Ray Train folder is gone would
    start afresh at epoch 0 beside its old records: the trial's driver refuses, naming the folder (the
    error is the trial's row in the results, as for a corrupt snapshot: tests/test_drills.py)."""
    from condgen_bench.harness.trial import check_trial_folder
    from condgen_bench.reports.run_folder.checkpoint import CheckpointError

    run_dir = str(tmp_path)
    check_trial_folder(run_dir, "t0", "t0")  # a trial that never ran: nothing to lose
    history = tmp_path / "artifacts" / "t0" / "history"
    history.mkdir(parents=True)
    (history / "epoch_0001.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"trial t0: its Ray Train folder .*train/t0 is gone .*1 of its epochs"):
        check_trial_folder(run_dir, "t0", "t0")
    check_trial_folder(run_dir, "t0", "t0-x1")  # a PBT exploit's first start of its own Train run
    (tmp_path / "train" / "t0").mkdir(parents=True)
    check_trial_folder(run_dir, "t0", "t0")  # the folder is there (a trial that never checkpointed has one)


def test_a_trial_the_scheduler_stopped_stays_stopped_early_though_its_worker_trained_one_more_epoch(tmp_path):
    """ASHA decides on a trial's epoch-1 report; its stop reaches the worker a moment later, and a tiny epoch can
    be trained (its history written) in that moment, never reported or evaluated. Seen in the killed-driver
    drill on a loaded machine: the trial stopped at epoch 1 of 2 came out "completed". The status follows what
    the scheduler saw; the extra epoch stays in the history, and the reason names it."""
    from types import SimpleNamespace

    from condgen_bench import datasets
    from condgen_bench.harness.config import to_dict
    from condgen_bench.harness.results import TrialOutcome, _trial_rows, training_progress
    from condgen_bench.reports.run_folder.records import EvalRecord
    from condgen_bench.reports.run_folder import layout, storage
    from test_ray_sweep import tiny_experiment

    config = tiny_experiment(tmp_path)  # 2 epochs planned
    run_dir, trial_id = str(tmp_path / "run"), "abcde_00001"
    for epoch in (1, 2):  # what the worker trained
        storage.write_bytes(layout.history_file(run_dir, trial_id, epoch),
                            json.dumps({"epoch": epoch, "step": 4 * epoch, "loss": 1.0}).encode())
    EvalRecord({"stage": "tracking", "epoch": 1, "step": 4, "metrics": {"loss": 1.0}, "missing": {}, "protocol": {}},
               grid_png=b"png").write(layout.epoch_dir(run_dir, trial_id, 1))  # evaluated and reported: epoch 1
    spec = datasets.load(config.data).spec()
    for tune_saw, status in ((1, "stopped_early"), (2, "completed")):
        result = SimpleNamespace(error=None, metrics={"epoch": tune_saw})
        trial = TrialOutcome(trial_id, result, training_progress(run_dir, trial_id, None), None)
        rows, history = _trial_rows(run_dir, trial, to_dict(config), {}, spec)
        assert {row["status"] for row in rows} == {status}, tune_saw
        assert [h["epoch"] for h in history] == [1, 2]
    assert rows[0]["status_reason"] == ""
    trial = TrialOutcome(trial_id, SimpleNamespace(error=None, metrics={"epoch": 1}),
                         training_progress(run_dir, trial_id, None), None)
    [row], _ = _trial_rows(run_dir, trial, to_dict(config), {}, spec)
    assert row["status_reason"] == ("stopped by the scheduler after epoch 1 of 2; epoch 2 had trained but was "
                                    "stopped before it was reported")


def test_a_smaller_budget_is_a_view_of_the_trials_per_epoch_records(tmp_path):
    """A budget read off a trial (harness/budgets.py) is TrialOutcome.up_to over the same per-epoch records:
    its epochs and evaluations up to the budget, as "<trial>@<budget>" with budget_of the trial; a divergence
    after the budget is the longer budget's (the budget itself completed), one before it is its own."""
    from types import SimpleNamespace

    from condgen_bench import datasets
    from condgen_bench.harness.budgets import budget_values
    from condgen_bench.harness.config import to_dict
    from condgen_bench.harness.results import TrialOutcome, _trial_rows, training_progress
    from condgen_bench.reports.run_folder.records import EvalRecord
    from condgen_bench.reports.run_folder import layout, storage
    from test_ray_sweep import tiny_experiment

    config = tiny_experiment(tmp_path)
    config.train.epochs = 4
    run_dir, trial_id = str(tmp_path / "run"), "abcde_00002"
    for epoch in (1, 2, 3):  # it trained three epochs, then diverged in its fourth
        storage.write_bytes(layout.history_file(run_dir, trial_id, epoch),
                            json.dumps({"epoch": epoch, "step": 4 * epoch, "loss": 1.0}).encode())
    for epoch in (2, 3):
        EvalRecord({"stage": "tracking", "epoch": epoch, "step": 4 * epoch, "metrics": {"loss": 1.0}, "missing": {},
                    "protocol": {}}, grid_png=b"png").write(layout.epoch_dir(run_dir, trial_id, epoch))
    spec = datasets.load(config.data).spec()
    diverged = {"epoch": 4, "step": 13, "reason": "non-finite loss"}
    trial = TrialOutcome(trial_id, SimpleNamespace(error=None, metrics={"epoch": 3}),
                         training_progress(run_dir, trial_id, None), diverged)
    two = trial.up_to(2)
    assert (two.row_id, two.diverged, list(two.progress["epoch"])) == ("abcde_00002@2", None, [1, 2])
    rows, history = _trial_rows(run_dir, two, budget_values(to_dict(config), 2), {}, spec)
    assert [(r["trial_id"], r["epoch"], r["status"], r["budget_of"]) for r in rows] == [
        ("abcde_00002@2", 2, "completed", trial_id)]
    assert [(h["trial_id"], h["epoch"]) for h in history] == [("abcde_00002@2", 1), ("abcde_00002@2", 2)]
    rows, history = _trial_rows(run_dir, trial, to_dict(config), {}, spec)  # the trial itself, unchanged
    assert [(r["epoch"], r["status"]) for r in rows] == [(2, "diverged"), (3, "diverged"), (4, "diverged")]
    assert "budget_of" not in rows[0] and len(history) == 3
    early = TrialOutcome(trial_id, trial.result, trial.progress, {**diverged, "epoch": 2}).up_to(3)
    assert early.diverged["epoch"] == 2 and early.status(3, 3)[0] == "diverged"


def test_the_newest_checkpoint_is_the_one_furthest_on_inside_whatever_the_folder_names_say(tmp_path):
    """Ray Train names checkpoint folders by the writing node's local time: after a clock change (or on a
    skewed replacement node) the name that sorts last can hold the older epoch. The newest is read from
    inside, by (epoch, step); an unreadable checkpoint is passed over, naming its file."""
    import torch

    from condgen_bench.reports.run_folder import layout
    from condgen_bench.reports.run_folder.checkpoint import TrialCheckpoint, newest_readable, trial_checkpoints

    run_dir, trial = tmp_path / "run", "abcde_00000"
    train = run_dir / "train" / trial

    def save(name: str, epoch: int, step: int) -> str:
        (train / name).mkdir(parents=True)
        torch.save({"epoch": epoch, "method": {"step": step}}, train / name / layout.CHECKPOINT_FILE)
        return str(train / name)

    later_clock = save("checkpoint_2026-12-03_10-00-00.000000", 1, 8)  # written first, clock set forward
    furthest = save("checkpoint_2026-12-03_09-00-00.000000", 2, 16)  # written after the clock went back
    cut = save("checkpoint_2026-12-03_11-00-00.000000", 3, 24)
    (train / "checkpoint_2026-12-03_11-00-00.000000" / layout.CHECKPOINT_FILE).write_bytes(b"PK\x03\x04 cut")
    checkpoints = trial_checkpoints(str(run_dir), trial)
    assert sorted(c.folder for c in checkpoints) == sorted([later_clock, furthest, cut])
    lines = []
    newest, state = newest_readable(checkpoints, log=lines.append)
    assert newest.folder == furthest and state["epoch"] == 2
    [warning] = lines
    assert warning.startswith(f"WARNING: unreadable checkpoint {cut}/{layout.CHECKPOINT_FILE}")
    assert newest_readable([TrialCheckpoint(cut)], log=lines.append) is None
