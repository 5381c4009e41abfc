"""Several objectives at once (sweep.objectives, e.g. {"sample_accuracy": "max", "train_flops": "min"}):
the trials' Pareto front, which the results record and the finalists are drawn from.

Each trial stands at its best evaluated epoch by the sweep metric (harness/best.py: the checkpoint kept and
scored), with its values of every objective there. A trial is on the front when no other is at least as
good on every objective and better on one. Any search records the front (grid, random, Optuna); Optuna's
multi-objective search also proposes its points by it (harness/search.py). The finalists are the front's
trials, at most eval.finalists of them, spread along it: evenly spaced in the order of the first objective
that is not the sweep metric (cheapest to dearest, say).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from condgen_bench.reports.pareto import front_points, pareto_mask

ELIGIBLE = ("completed", "stopped_early")  # trial statuses a finalist may have (not diverged, error, no_result)


def lineage_start(restarts) -> int:
    """The epoch a trial's current weights descend from: its last restart's copied epoch (the results'
    "restarts" JSON, oldest first: the scheduler's restarts), 0 for a trial never restarted."""
    events = json.loads(restarts) if isinstance(restarts, str) else []
    return int(events[-1]["epoch"]) if events else 0


def evaluated_rows(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The sweep's evaluated rows of eligible trials under their own sampler, with a value of ``metric``, each
    trial's since its last restart only (earlier epochs are another lineage's, with other settings)."""
    eligible = set(frame.loc[frame["status"].isin(ELIGIBLE), "trial_id"])
    rows = front_points(frame)  # the sweep's evaluations under their own sampler
    rows = rows[rows["trial_id"].isin(eligible)]
    if "restarts" in rows:
        rows = rows[pd.to_numeric(rows["epoch"], errors="coerce") > rows["restarts"].map(lineage_start)]
    return rows[pd.to_numeric(rows[metric], errors="coerce").notna()]


def best_epoch_rows(rows: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Each trial's row at its best value of ``metric`` (ties: the earlier epoch), one a trial."""
    ordered = rows.sort_values([metric, "epoch"], ascending=[mode == "min", True], kind="stable")
    return ordered.drop_duplicates("trial_id", keep="first")


def front_rows(frame: pd.DataFrame, config) -> pd.DataFrame:
    """The trials on the objectives' front, each at its best evaluated epoch by the sweep metric, ordered
    by the first objective that is not the sweep metric (its better end first), ties by trial id."""
    sweep = config.sweep
    rows = evaluated_rows(frame, sweep.metric)
    if rows.empty or any(m not in rows for m in sweep.objectives):
        return rows.iloc[0:0]
    best = best_epoch_rows(rows, sweep.metric, sweep.mode)
    front = best[pareto_mask(best, sweep.objectives)]
    axis = next((m for m in sweep.objectives if m != sweep.metric), sweep.metric)
    return front.sort_values([axis, "trial_id"], ascending=[sweep.objectives[axis] == "min", True], kind="stable")


def spread(rows: pd.DataFrame, k: int) -> pd.DataFrame:
    """At most ``k`` of the ordered ``rows``, evenly spaced along them, both ends kept where k >= 2."""
    if len(rows) <= k:
        return rows
    if k == 1:
        return rows.iloc[[0]]
    picks = sorted(set(np.linspace(0, len(rows) - 1, k).round().astype(int)))
    return rows.iloc[picks]


def mark_front(frame: pd.DataFrame, config) -> pd.DataFrame:
    """The results rows with column "on_front" (True on each front trial's best-epoch row, False on the
    other evaluated rows) where ``config.sweep.objectives`` is set; unchanged otherwise."""
    if not config.sweep.objectives or frame.empty:
        return frame
    frame = frame.copy()
    front = front_rows(frame, config)
    frame["on_front"] = frame.index.isin(front.index)
    return frame
