"""Quality against what it cost, across families: the Pareto front per dataset and the leaderboard at equal
training compute.

Every evaluated checkpoint of the sweep (each trial's tracking and trial-final evaluations under its own
sampler, on the validation split where the data has one) is a point: its quality (the sweep metric, and
FID in the domain features) against its training FLOPs up to that epoch (train_flops: portable across
machines) or its sampling FLOPs per image (sample_gflops_per_image). A point is on the front when no other
point costs at most as much and scores at least as well, one of the two strictly. The finalists' figures
are on the test split and are not mixed in.

At equal compute: each family's best point whose training FLOPs are within a budget, by default the
smallest family's largest (the most that every family was given), or the config's report.compute_budget.
"""

from __future__ import annotations

import math
from html import escape

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from condgen_bench.reports.blocks import fmt, note, table
from condgen_bench.reports.catalog import lookup
from condgen_bench.reports.charts import to_fragment
from condgen_bench.reports.inputs import Objective

COSTS = ("train_flops", "sample_gflops_per_image")  # the front's x axes: training and sampling compute


def pareto_mask(values: pd.DataFrame, modes: dict[str, str]) -> pd.Series:
    """values [N rows, one column per objective], modes {column: "max" or "min"} -> [N] bool: True where no
    other row is at least as good on every objective and strictly better on one. A row missing a value is
    off the front."""
    names = list(modes)
    signed = np.stack([pd.to_numeric(values[m], errors="coerce").to_numpy(float) * (-1.0 if modes[m] == "max" else 1.0)
                       for m in names], axis=1)  # [N, K], lower is better everywhere
    valid = ~np.isnan(signed).any(axis=1)
    out = np.zeros(len(values), dtype=bool)
    others = signed[valid]
    for i in np.flatnonzero(valid):
        dominated = ((others <= signed[i]).all(axis=1) & (others < signed[i]).any(axis=1)).any()
        out[i] = not dominated
    return pd.Series(out, index=values.index)


def on_front(cost: pd.Series, quality: pd.Series, mode: str) -> pd.Series:
    """Non-dominated points of one cost [N] (lower is better) against one quality [N] (``mode`` "max" or
    "min"): pareto_mask of the two -> [N] bool. Points without both values are off the front."""
    return pareto_mask(pd.DataFrame({"cost": cost, "quality": quality}), {"cost": "min", "quality": mode})


def front_points(rows: pd.DataFrame) -> pd.DataFrame:
    """The sweep's evaluated checkpoints under their own sampler (no finalist rows): the front's points."""
    rows = rows[rows.get("stage", pd.Series("", index=rows.index)).fillna("") != "finalist"]
    setting = rows.get("sampling_setting", pd.Series("default", index=rows.index)).fillna("default")
    return rows[setting == "default"]


def front_figure(points: pd.DataFrame, cost: str, metric: str, mode: str, colors: dict[str, str]) -> str | None:
    """Quality against one cost, a colour per family; the front's points joined (a step line: its best
    quality for the money) and the dominated ones faded. None where no point has both values."""
    points = points.dropna(subset=[cost, metric]) if {cost, metric} <= set(points.columns) else points.iloc[0:0]
    if points.empty:
        return None
    front = on_front(points[cost], points[metric], mode)
    entry, cost_entry = lookup(metric), lookup(cost)
    fig = go.Figure(layout=dict(title=f"{entry.label if entry else metric} against {cost_entry.label}",
                                xaxis_title=f"{cost_entry.label} ({cost_entry.unit})",
                                yaxis_title=entry.label if entry else metric))
    methods = points.get("method", pd.Series("", index=points.index)).fillna("").astype(str)
    for method in dict.fromkeys(methods):
        part = points[methods == method]
        first = part["trial_id"].iloc[0]
        fig.add_scatter(x=part[cost], y=part[metric], name=method or "trials", mode="markers",
                        text=part["trial_id"] + " epoch " + part["epoch"].map(lambda e: fmt(e)),
                        hovertemplate="%{text}<br>%{x:.3g}<br>%{y:.4g}<extra></extra>",
                        marker=dict(size=9, color=colors.get(first),
                                    opacity=[1.0 if f else 0.25 for f in front[part.index]]))
    edge = points[front].sort_values(cost)
    fig.add_scatter(x=edge[cost], y=edge[metric], name="Pareto front", mode="lines",
                    line=dict(color="#222", width=1.5, shape="hv"), hoverinfo="skip")
    fig.update_xaxes(type="log")
    return to_fragment(fig)


def compute_budget(points: pd.DataFrame, configured: float | None) -> tuple[float | None, str]:
    """The training-FLOPs budget of the equal-compute view and how it was set: ``configured``
    (report.compute_budget), else the smallest of the families' largest training FLOPs."""
    if configured:
        return float(configured), "report.compute_budget"
    if "train_flops" not in points or "method" not in points:
        return None, ""
    largest = pd.to_numeric(points["train_flops"], errors="coerce").groupby(points["method"]).max().dropna()
    if len(largest) < 2:
        return None, ""
    return float(largest.min()), f"the smallest family's largest budget ({largest.idxmin()})"


def equal_compute(points: pd.DataFrame, obj: Objective, budget: float) -> pd.DataFrame:
    """Each family's best point (by the objective) with training FLOPs within ``budget``, best first."""
    within = points[pd.to_numeric(points["train_flops"], errors="coerce") <= budget]
    within = within[pd.to_numeric(within.get(obj.metric), errors="coerce").notna()]
    if within.empty:
        return within
    ordered = within.sort_values(obj.metric, ascending=obj.mode == "min", kind="stable")
    return ordered.drop_duplicates("method")


def leader_sentence(points: pd.DataFrame, obj: Objective, configured: float | None) -> tuple[str, pd.DataFrame, float | None]:
    """The equal-compute view of a dataset's sweep points: (its sentence for the summary, its rows, the
    budget); ("", empty, None) where fewer than two families have training FLOPs."""
    budget, why = compute_budget(points, configured)
    if budget is None or obj.metric not in points:
        return "", points.iloc[0:0], None
    rows = equal_compute(points, obj, budget)
    overall = equal_compute(points, obj, math.inf)
    if rows.empty or overall.empty:
        return "", rows, budget
    entry = lookup(obj.metric)
    percent = entry is not None and entry.unit == "%"
    lead, free = rows.iloc[0], overall.iloc[0]
    splits = sorted(set(points.get("protocol.reference_split", pd.Series(dtype=object)).dropna()))
    where = f"the sweep's evaluations on the {' and '.join(splits)} split" if splits else "the sweep's evaluations"
    text = (f"At equal training compute (at most {budget:.3g} FLOPs, {why}), {lead['method']} leads on "
            f"{entry.label if entry else obj.metric} with {fmt(lead[obj.metric], percent)} "
            f"({lead['trial_id']} at epoch {fmt(lead['epoch'])}, in {where})")
    if free["method"] == lead["method"]:
        text += f"; it leads without the limit too ({fmt(free[obj.metric], percent)})."
    else:
        text += (f"; without the limit {free['method']} leads with {fmt(free[obj.metric], percent)} at "
                 f"{float(free['train_flops']):.3g} FLOPs.")
    return text, rows, budget


def equal_compute_table(rows: pd.DataFrame, obj: Objective, budget: float, points: pd.DataFrame) -> str:
    """The leaderboard's equal-compute view: each family's best evaluated checkpoint within the budget
    (``rows``, from equal_compute), then each family of ``points`` with none within it and its cheapest."""
    entry = lookup(obj.metric)
    percent = entry is not None and entry.unit == "%"
    lines = []
    for _, r in rows.iterrows():
        cells = [escape(str(r.get("method"))), escape(str(r["trial_id"])), fmt(r.get("epoch")),
                 f"{float(r['train_flops']):.3g}", fmt(r.get(obj.metric), percent), fmt(r.get("fid_domain"))]
        lines.append("<tr>" + "".join(f'<td class="l">{c}</td>' if i < 2 else f"<td>{c}</td>"
                                      for i, c in enumerate(cells)) + "</tr>")
    flops = pd.to_numeric(points["train_flops"], errors="coerce")
    for method, cheapest in points[flops.notna()].assign(_f=flops).sort_values("_f").groupby("method", sort=False):
        if method in set(rows["method"]):
            continue
        first = cheapest.iloc[0]
        lines.append(f'<tr class="faded"><td class="l">{escape(str(method))}</td><td class="l" colspan="5">none '
                     f"within the budget: its cheapest evaluated checkpoint took {float(first['_f']):.3g} FLOPs "
                     f"({escape(str(first['trial_id']))} at epoch {fmt(first.get('epoch'))})</td></tr>")
    label = entry.label if entry else obj.metric
    return (f"<h3>At equal training compute <small>(at most {budget:.3g} FLOPs; each family's best evaluated "
            "checkpoint within it, validation split)</small></h3>"
            + table(["method", "trial", "epoch", "training FLOPs", label, "FID (domain)"], lines))


def pareto_section(view) -> str:
    """The Pareto fronts of one dataset (view: reports/sections.py DatasetView): the objective and FID
    against training and sampling FLOPs; "" where no point has a cost."""
    points = front_points(view.rows)
    metrics = [m for m in dict.fromkeys([view.obj.metric, "fid_domain"]) if m in points]
    figures = [front_figure(points, cost, m, view.obj.mode if m == view.obj.metric else lookup(m).direction,
                            view.colors) for cost in COSTS for m in metrics if cost in points]
    figures = [f for f in figures if f]
    if not figures:
        return ""
    return ("<h2>Quality against compute: the Pareto front <small>(every evaluated checkpoint of the sweep; "
            "joined: the points no other beats on both; faded: dominated)</small></h2>"
            + note("training FLOPs and sampling FLOPs are counted, not timed: portable across machines")
            + "".join(figures))

