"""A run folder's identity and its one driver.

- A new run's folder is named by its start time and a random suffix, and created exclusively (a local
  folder: ``os.mkdir``, which fails if it exists), so two sweeps of one name started in the same second get
  two folders. Object stores (s3://, gs://) have no exclusive create: there the suffix alone (16 random
  bits) keeps two runs apart, and a check for an existing folder narrows the window; that is all.
- A lock file in the folder (``driver.lock``: host, process id, start time, renewed every
  ``RENEW_SECONDS`` while the driver lives) makes a second driver refuse, naming the first. A lock whose
  owner is gone (a dead process on this host, or no renewal for ``STALE_SECONDS``) is taken over, with a
  log line: a killed driver's run can be resumed at once from the same host.

A resumed run is the folder it is given, wherever it is: Tune's own state lives in it (harness/sweep.py).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time

from condgen_bench.reports.run_folder import storage

LOCK_FILE = "driver.lock"
RENEW_SECONDS = 20.0  # how often a live driver rewrites its lock's "renewed" time
STALE_SECONDS = 120.0  # a lock not renewed for this long is taken over (its driver is gone, or its host is)
STAMP = "%Y%m%d-%H%M%S"  # a run folder's name: the start time, then "-" and 4 random hex digits


class RunLockedError(RuntimeError):
    """The run folder has a live driver already."""


def new_run_dir(experiment_dir: str) -> str:
    """Create and return a new run folder under ``experiment_dir``: "<start time>-<4 hex digits>", created
    exclusively where the storage allows (a local path; see the module's note for object stores)."""
    stamp = time.strftime(STAMP)
    for _ in range(100):
        run_dir = storage.join(experiment_dir, f"{stamp}-{secrets.token_hex(2)}")
        if storage.is_uri(run_dir):
            if not storage.exists(run_dir):
                return run_dir
            continue
        os.makedirs(experiment_dir, exist_ok=True)
        try:
            os.mkdir(run_dir)
            return run_dir
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run folder under {experiment_dir} (100 names taken)")


def latest_run(experiment_dir: str) -> str:
    """The newest run folder under ``experiment_dir`` (by its start time). Raises FileNotFoundError when there
    is none, and ValueError when the newest two started in the same second (give the folder instead)."""
    runs = [name for name in storage.list_dir(experiment_dir) if name[:1].isdigit()]
    if not runs:
        raise FileNotFoundError(f"no run to resume under {experiment_dir}")
    stamp = len(time.strftime(STAMP, time.localtime(0)))
    newest = [name for name in runs if name[:stamp] == runs[-1][:stamp]]
    if len(newest) > 1:
        raise ValueError(f"runs {', '.join(newest)} under {experiment_dir} started in the same second: "
                         "--resume RUN_DIR names the one to resume")
    return storage.join(experiment_dir, runs[-1])


def _alive(owner: dict, now: float) -> bool:
    """Whether the driver that wrote ``owner`` (a lock's contents) may still run."""
    if now - float(owner.get("renewed", 0)) > STALE_SECONDS:
        return False
    if owner.get("host") == socket.gethostname():
        try:
            os.kill(int(owner["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process: alive
            return True
    return True


class RunLock:
    """The lock of one driver on ``run_dir`` (a context manager). ``acquire`` raises RunLockedError naming the
    owner's host and process id when another live driver holds it; takes over a stale lock, saying so."""

    def __init__(self, run_dir: str, log=print):
        self.path = storage.join(run_dir, LOCK_FILE)
        self.log = log
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self, exclusive: bool) -> None:
        data = json.dumps({**self.me, "renewed": time.time()}).encode()
        if exclusive and not storage.is_uri(self.path):
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # FileExistsError if another won
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        else:
            storage.write_bytes(self.path, data)

    def owner(self) -> dict | None:
        """The lock's contents, or None where there is no lock (an unreadable one counts as stale)."""
        if not storage.exists(self.path):
            return None
        try:
            return json.loads(storage.read_bytes(self.path))
        except (OSError, ValueError):
            return {"host": "?", "pid": -1, "renewed": 0}

    def acquire(self) -> "RunLock":
        owner = self.owner()
        if owner is not None:
            if _alive(owner, time.time()):
                raise RunLockedError(
                    f"{os.path.dirname(self.path)} is in use by a driver on host {owner.get('host')}, process "
                    f"{owner.get('pid')} (its lock {self.path} was renewed "
                    f"{time.time() - float(owner.get('renewed', 0)):.0f} s ago); wait for it to end, or stop it")
            self.log(f"taking over the lock of a driver that is gone (host {owner.get('host')}, process "
                     f"{owner.get('pid')}): {self.path}")
            storage.remove(self.path)
        try:
            self._write(exclusive=True)
        except FileExistsError:  # another driver took it between the look and the write
            owner = self.owner() or {}
            raise RunLockedError(f"{os.path.dirname(self.path)} was just taken by host {owner.get('host')}, "
                                 f"process {owner.get('pid')}") from None
        self._thread = threading.Thread(target=self._renew, name="run lock", daemon=True)
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            try:
                self._write(exclusive=False)
            except OSError as error:  # a full disk: the next renewal may pass; the run is not stopped for it
                self.log(f"WARNING: could not renew {self.path}: {error}")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        owner = self.owner()
        if owner and owner.get("pid") == self.me["pid"] and owner.get("host") == self.me["host"]:
            storage.remove(self.path)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
