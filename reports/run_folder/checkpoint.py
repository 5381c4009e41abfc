"""A trial's checkpoint: one folder holding ``state.pt`` (layout.CHECKPOINT_FILE), saved, read and copied
here only. Whoever holds one (a Ray Train ``checkpoint_*`` folder, the copy kept for a budget or for the
scheduler, the copy a restart starts from, a worker's temporary folder before Ray Train takes it) reads it
the same way.

The state is what harness/worker.py ``checkpoint_state`` makes: {"method": the method's state_dict, "epoch",
"config": the trial's resolved config dict, "precision", "noise_states", "noise_kind"}. Ray Train names its
checkpoint folders by the local time of the node that wrote them, so their names sort wrongly after a clock
change or on a skewed replacement node: the newest checkpoint is the readable one whose saved (epoch, step)
is the largest (``newest_readable``)."""

from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass

import pyarrow.fs as pafs

from condgen_bench.reports.run_folder import layout, storage


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, and no older one of the trial that can."""


@dataclass(frozen=True)
class TrialCheckpoint:
    """The checkpoint in ``folder``: a local path or a URI, or, with ``filesystem`` (a Ray Train
    Checkpoint's, whose paths carry no scheme), a path on that filesystem."""

    folder: str
    filesystem: pafs.FileSystem | None = None

    @property
    def path(self) -> str:
        """The state file."""
        return self._join(self.folder, layout.CHECKPOINT_FILE)

    def _join(self, *parts: str) -> str:
        return posixpath.join(*parts) if self.filesystem is not None else storage.join(*parts)

    def read_bytes(self) -> bytes:
        if self.filesystem is None:
            return storage.read_bytes(self.path)
        with self.filesystem.open_input_file(self.path) as f:
            return f.read()

    def exists(self) -> bool:
        if self.filesystem is None:
            return storage.exists(self.path)
        return self.filesystem.get_file_info(self.path).type == pafs.FileType.File

    def load(self) -> dict:
        """The saved state, on the CPU (random-number states must stay CPU tensors; load_state_dict copies
        weights and optimizer state onto the method's device). weights_only: tensors, containers, numbers and
        strings only, so a checkpoint in a run folder someone else wrote cannot run code here."""
        import torch  # here: the report reads runs without loading torch

        return torch.load(io.BytesIO(self.read_bytes()), map_location="cpu", weights_only=True)

    def save(self, state: dict) -> None:
        """Write ``state`` (worker.checkpoint_state) as this folder's state file, whole or not at all."""
        import torch

        buffer = io.BytesIO()
        torch.save(state, buffer)
        storage.write_bytes(self.path, buffer.getvalue())

    def copy_to(self, folder: str) -> TrialCheckpoint:
        """The same state file copied into ``folder`` (a local path or URI); returns the copy."""
        copy = TrialCheckpoint(folder)
        storage.write_bytes(copy.path, self.read_bytes())
        return copy

    def siblings(self) -> list[TrialCheckpoint]:
        """The other Ray Train checkpoint folders beside this one (not Train's snapshot file among them)."""
        parent, name = posixpath.split(self.folder.rstrip("/")) if self.filesystem is not None \
            else storage.split(self.folder)
        if self.filesystem is None:
            names = storage.list_dir(parent)
        else:
            names = [info.base_name for info in self.filesystem.get_file_info(pafs.FileSelector(parent))
                     if info.type == pafs.FileType.Directory]
        return [TrialCheckpoint(self._join(parent, n), self.filesystem) for n in sorted(names)
                if n.startswith(layout.CHECKPOINT_PREFIX) and n != name]

    def load_or_older(self, log=print) -> dict:
        """This checkpoint's state (Ray Train's latest of a trial) or, where it cannot be read (a truncated
        file, a lost folder), that of the newest readable older checkpoint beside it, with a warning naming
        the unreadable file. Raises CheckpointError naming the file when none can be read: never a silent
        fresh start."""
        try:
            return self.load()
        except Exception as error:  # noqa: BLE001 - any unreadable checkpoint; the error is named below
            failure = f"{self.path} ({describe(error)})"
        older = self.siblings()
        found = newest_readable(older, log=lambda *_: None)
        if found is None:
            raise CheckpointError(f"cannot resume from unreadable checkpoint {failure}; no older checkpoint of the "
                                  f"trial can be read either ({len(older)} tried): restore the file, or start a new run")
        checkpoint, state = found
        log(f"WARNING: unreadable checkpoint {failure}; resuming from the older {checkpoint.folder} "
            f"(epoch {state['epoch']})")
        return state


def describe(error: Exception) -> str:
    """An unreadable file's error in one short line (torch's explanations run long)."""
    return f"{type(error).__name__}: {str(error).strip().split('. ')[0][:200]}"


def position(state: dict) -> tuple[int, int]:
    """(epoch, training step) of a saved state: where the trial stood when it was written."""
    return int(state["epoch"]), int(state["method"].get("step", 0))


def newest_readable(checkpoints: list[TrialCheckpoint], log=print) -> tuple[TrialCheckpoint, dict] | None:
    """(checkpoint, state) of the readable one among ``checkpoints`` that is furthest on by (epoch, step),
    whatever the folders are named; None if none can be read. Each unreadable one is logged, naming its file."""
    best = None
    for checkpoint in checkpoints:
        try:
            state = checkpoint.load()
            key = position(state)
        except Exception as error:  # noqa: BLE001 - any unreadable checkpoint: named, and passed over
            log(f"WARNING: unreadable checkpoint {checkpoint.path} ({describe(error)}); passed over")
            continue
        if best is None or key > best[0]:
            best = (key, checkpoint, state)
    return None if best is None else (best[1], best[2])


def trial_checkpoints(run_dir: str, trial_id: str) -> list[TrialCheckpoint]:
    """The trial's checkpoints (layout.checkpoint_folders), in no meaningful order: newest_readable picks."""
    return [TrialCheckpoint(folder) for folder in layout.checkpoint_folders(run_dir, trial_id)]
