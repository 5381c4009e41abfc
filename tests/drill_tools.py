"""Helpers of the failure drills (tests/test_drills.py, tests/test_ray_sweep.py, tests/test_cluster_storage.py):
waiting on files with a timeout, reading Ray Train's checkpoint snapshot, killing a paused worker."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest


def wait_for(condition, what: str, timeout: float = 240, process: subprocess.Popen | None = None, log=None):
    """Poll ``condition`` until it holds; fail after ``timeout`` s, or at once if ``process`` ended."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            tail = Path(log).read_text()[-3000:] if log else ""
            pytest.fail(f"{what}: the run ended first (exit {process.returncode})\n{tail}")
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)


def checkpointed_epoch(train_dir: Path) -> int | None:
    """The epoch of the newest checkpoint that Ray Train's snapshot lists (what a restart resumes from)."""
    try:
        snapshot = json.loads((train_dir / "checkpoint_manager_snapshot.json").read_text())
        return snapshot["latest_checkpoint_result"]["metrics"]["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def tune_saved_status(experiment_dir: Path) -> dict[str, str]:
    """{trial id: status} as Tune's newest saved experiment state has them: what a resumed driver restores. Tune
    saves that state at most every 10 s, and a trial saved as running is run again on a resume."""
    states = sorted(experiment_dir.glob("experiment_state-*.json"))
    try:
        trials = json.loads(states[-1].read_text())["trial_data"]
    except (IndexError, OSError, ValueError, KeyError):
        return {}
    status = {}
    for state, _ in trials:
        state = json.loads(state) if isinstance(state, str) else state
        status[state["trial_id"]] = state["status"]
    return status


def tune_trial_failures(experiment_dir: Path) -> dict[str, int]:
    """{trial id: how often Tune saw the trial fail and retried it}, from its newest saved experiment state
    (a worker restarted by Ray Train is not a failure of the trial)."""
    [*_, newest] = sorted(experiment_dir.glob("experiment_state-*.json"))
    failures = {}
    for state, run_metadata in json.loads(newest.read_text())["trial_data"]:
        state, run_metadata = (json.loads(part) if isinstance(part, str) else part for part in (state, run_metadata))
        failures[state["trial_id"]] = run_metadata["num_failures"]
    return failures


def files_under(*folders: Path) -> dict[str, tuple[int, int]]:
    """{path: (size, mtime_ns)} of every file under the folders."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for folder in folders if folder.exists()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def epoch_record(run_dir: Path, trial: str, epoch: int) -> dict:
    return json.loads((run_dir / "artifacts" / trial / "history" / f"epoch_{epoch:04d}.json").read_text())


def pid_in(marker: Path) -> int | None:
    try:
        return int(marker.read_text())
    except (OSError, ValueError):
        return None


def kill_when_checkpointed(marker: Path, experiment_dir: Path, epoch: int) -> None:
    """Wait until a worker has paused at the marker and its trial's snapshot lists ``epoch``'s checkpoint
    (Ray Train registers a report a moment after it is made), then SIGKILL that worker."""
    wait_for(lambda: pid_in(marker) is not None, "the worker to pause")
    [train_dir] = [d for d in experiment_dir.glob("*/train/*") if d.name.endswith("00000")]
    wait_for(lambda: checkpointed_epoch(train_dir) == epoch, f"the epoch-{epoch} checkpoint")
    os.kill(pid_in(marker), signal.SIGKILL)
