"""Choosing a trial's checkpoint by what it holds. Ray Train names its checkpoint folders by the local time
of the node that wrote them, so their names sort wrongly after a clock change or on a skewed replacement
node: the newest checkpoint is the readable one whose saved (epoch, step) is the largest."""

from __future__ import annotations

import io

import torch

from condgen_bench.reports import layout, storage


def read_state(folder: str) -> dict:
    """The state harness/worker.py saved in a checkpoint folder: tensors, containers, numbers and strings
    only (weights_only: a checkpoint in a run folder someone else wrote must not run code here), on the CPU
    (random-number states must stay CPU tensors)."""
    data = storage.read_bytes(storage.join(folder, layout.CHECKPOINT_FILE))
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def position(state: dict) -> tuple[int, int]:
    """(epoch, training step) of a saved state: where the trial stood when it was written."""
    return int(state["epoch"]), int(state["method"].get("step", 0))


def newest_readable(folders: list[str], log=print, read=read_state) -> tuple[str, dict] | None:
    """(folder, state) of the readable checkpoint among ``folders`` that is furthest on by (epoch, step),
    whatever the folders are named; None if none can be read. Each unreadable one is logged, naming its file.
    ``read``: folder -> state (read_state; a Ray Train worker reads through its checkpoint's filesystem)."""
    best = None
    for folder in folders:
        try:
            state = read(folder)
            key = position(state)
        except Exception as error:  # noqa: BLE001 - any unreadable checkpoint: named, and passed over
            log(f"WARNING: unreadable checkpoint {storage.join(folder, layout.CHECKPOINT_FILE)} "
                f"({type(error).__name__}: {str(error).strip().split('. ')[0][:200]}); passed over")
            continue
        if best is None or key > best[0]:
            best = (key, folder, state)
    return None if best is None else (best[1], best[2])
