"""Each trial's best evaluated checkpoints, so that a trial is judged at its best epoch and not its last.

GANs oscillate: a trial's sweep metric can peak mid-run and fall by its last epoch, while Ray Train keeps only
the newest ``train.keep_checkpoints``. So at every evaluated epoch rank 0 ranks the epoch's sweep metric (its
value at the tracking or trial-final evaluation, on the validation split where the data has one) against the
trial's kept ones, and keeps a copy of the checkpoints of the best ``eval.keep_best`` evaluated epochs under
artifacts/<trial>/best/ (layout.best_dir), with an index of them (layout.best_index).

Epoch budgets read off one run (harness/budgets.py) keep their own best: at each budget's last epoch the
index records the best epoch so far, which is at most that budget, and that epoch's copy is kept as long as
the budget names it. A trial that the sweep's scheduler restarts from another trial's weights
(harness/schedulers.py) starts its best afresh. The finalist stage (harness/finalists.py) loads a trial's best kept epoch, or its
budget's, and says which and by what rule (``selected_epoch``, ``selection_rule``).

The copies are written before the index names them, and dropped after it stops naming them: an index read
at any moment names only whole copies. A trial restarted from an older checkpoint trains its later epochs
again: each epoch evaluated again replaces its entry (a copy of the lost run's later epoch stays a real
checkpoint of the trial until the epoch comes round again).
"""

from __future__ import annotations

import json
import math

from condgen_bench.reports.run_folder import layout, storage
from condgen_bench.reports.run_folder.checkpoint import TrialCheckpoint


def ranked(entries: list[dict], mode: str) -> list[dict]:
    """Entries {"epoch", "value"} best first by ``mode`` ("max" or "min"); ties to the earlier epoch."""
    sign = -1.0 if mode == "max" else 1.0
    return sorted(entries, key=lambda e: (sign * e["value"], e["epoch"]))


def read_index(run_dir: str, trial_id: str) -> dict | None:
    """The trial's index of its best evaluated checkpoints (layout.best_index), or None where it has none."""
    path = layout.best_index(run_dir, trial_id)
    if not storage.exists(path):
        return None
    index = json.loads(storage.read_bytes(path))
    index["budgets"] = {int(b): e for b, e in index.get("budgets", {}).items()}  # JSON keys are strings
    return index


def record_epoch(run_dir: str, trial_id: str, epoch: int, value: float, metric: str, mode: str, keep: int,
                 checkpoint: TrialCheckpoint, budgets: list[int]) -> dict | None:
    """Rank the evaluated ``epoch`` (its sweep ``metric``'s ``value``; NaN: not ranked) among the trial's
    best ``keep``; copy its ``checkpoint`` where it is among them; at an epoch of ``budgets`` (the smaller
    budgets read off the trial) record that budget's best epoch so far. Returns the new index (None where
    keep is 0: the trial is judged at its last epoch)."""
    if keep <= 0:
        return None
    old = read_index(run_dir, trial_id) or {"kept": [], "budgets": {}}
    entries = [e for e in old["kept"] if e["epoch"] != epoch]  # an epoch trained again replaces its entry
    if math.isfinite(value):
        entries.append({"epoch": epoch, "value": float(value)})
    top = ranked(entries, mode)[:keep]
    budget_best = {b: e for b, e in old["budgets"].items() if b != epoch}
    if epoch in budgets and top:
        budget_best[epoch] = top[0]
    if any(e["epoch"] == epoch for e in top):
        checkpoint.copy_to(layout.best_checkpoint(run_dir, trial_id, epoch))
    index = {"metric": metric, "mode": mode, "kept": top, "budgets": budget_best}
    storage.write_bytes(layout.best_index(run_dir, trial_id),
                        json.dumps({**index, "budgets": {str(b): e for b, e in budget_best.items()}}, indent=1).encode())
    named = {e["epoch"] for e in top} | {e["epoch"] for e in budget_best.values()}
    for e in old["kept"] + list(old["budgets"].values()):
        if e["epoch"] not in named:
            storage.remove_folder(layout.best_checkpoint(run_dir, trial_id, e["epoch"]))
    return index


def best_of(run_dir: str, trial_id: str, budget: int | None = None) -> tuple[dict, str, str] | None:
    """The kept best epoch of a trial ({"epoch", "value"}, best over all its evaluated epochs) or of one of
    its budgets (the best at or before it), with its checkpoint folder and the rule that chose it (the
    finalist row's ``selection_rule``); None where the index names none (eval.keep_best 0, older runs)."""
    index = read_index(run_dir, trial_id)
    if index is None:
        return None
    entry = index["budgets"].get(budget) if budget is not None else (index["kept"] or [None])[0]
    if entry is None:
        return None
    within = f" up to epoch {budget}" if budget is not None else ""
    rule = f"best {index['metric']} ({index['mode']}) of the evaluated epochs{within}: {entry['value']:.4g}"
    return entry, layout.best_checkpoint(run_dir, trial_id, entry["epoch"]), rule


def forget(run_dir: str, trial_id: str) -> None:
    """Drop the trial's best checkpoints and their index: the sweep's scheduler restarted it from another
    trial's weights with other settings (harness/schedulers.py), so its epochs so far are another lineage's; its
    best is sought again among the epochs it trains from here."""
    storage.remove_folder(layout.best_dir(run_dir, trial_id))
