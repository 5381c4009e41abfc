"""A fault hook for the failure drills (tests/test_drills.py): inert unless ``CONDGEN_FAULT`` is set.

The variable holds a JSON object, or a list of them; each is one fault:

    {"at": point, "do": action, "once": marker file, ...where}

points and the ``where`` keys they match (a key left out matches anything):
    "epoch_end"  a training worker, after the epoch's report and checkpoint: trial, epoch, rank
    "step"       a training worker, before a training step: trial, epoch, rank, step (1-based in the epoch)
    "write"      storage.write_files, after part of a temporary file is written: path (matches any path
                 that contains it, e.g. "results.parquet" or "_00003/epoch_0002/eval.json")
    "results"    the sweep's driver, after every evaluation, before results.parquet and the report
    "restart"    the sweep's driver, once a scheduler's restart record of a trial is written, before the
                 trial is given its new settings (which Tune saves later): trial
    "run_files"  the sweep's driver, once a run's config.json and dataset_summary.json are written: run
                 (the run folder's path)
``trial`` matches the end of the trial id (Tune numbers a run's trials ..._00000, ..._00001, ...).

actions:
    "kill"    SIGKILL this process (a crashed worker or driver: no cleanup runs)
    "pause"   block, so that the test can kill from outside at a known point (gives up after 10 minutes)
    "enospc"  raise OSError(ENOSPC), as a full disk would
    "mark"    only create the marker file
    "stop"    raise FaultStop (a driver that stops there, its files as they are)

``once``: a file created (exclusively) when the fault fires, holding the process id; if it exists already
the fault is spent, so a restarted worker does not fail again. Tests wait on it to know that the point
was reached, and read from it which process to kill.

The variable reaches Ray workers through the trial's loop config (harness/sweep.py passes the driver's
value on; ``install`` sets it in the worker).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import time

ENV = "CONDGEN_FAULT"
PAUSE_SECONDS = 600.0  # a paused process that nobody kills goes on after this


class FaultStop(RuntimeError):
    """Raised by the "stop" action."""


def spec() -> str | None:
    """This process's fault setting (the JSON text), or None."""
    return os.environ.get(ENV) or None


def install(text: str | None) -> None:
    """Set the fault setting in this process (a Ray worker receives the driver's)."""
    if text:
        os.environ[ENV] = text


def _matches(fault: dict, where: dict) -> bool:
    for key, value in where.items():
        wanted = fault.get(key)
        if wanted is None:
            continue
        if key == "trial":
            if not str(value).endswith(str(wanted)):
                return False
        elif key == "path":
            if str(wanted) not in str(value):
                return False
        elif str(wanted) != str(value):
            return False
    return True


def _claim(marker: str | None) -> bool:
    """True if this process is the first to reach the fault (it creates the marker)."""
    if not marker:
        return True
    os.makedirs(os.path.dirname(os.path.abspath(marker)), exist_ok=True)
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, f"{os.getpid()}\n".encode())  # the process to kill, for a test that kills a paused one
    os.close(fd)
    return True


def hit(point: str, **where) -> None:
    """Fire the faults set for ``point`` that match ``where``; does nothing when none is set."""
    text = spec()
    if text is None:
        return
    faults = json.loads(text)
    for fault in faults if isinstance(faults, list) else [faults]:
        if fault.get("at") != point or not _matches(fault, where) or not _claim(fault.get("once")):
            continue
        action = fault.get("do")
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "pause":
            time.sleep(PAUSE_SECONDS)
        elif action == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        elif action == "stop":
            raise FaultStop(f"{ENV}: stopped at {point} {where}")
        elif action != "mark":
            raise ValueError(f"{ENV}: unknown action {action!r}; valid: kill, pause, enospc, mark, stop")
