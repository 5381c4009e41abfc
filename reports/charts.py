"""Plotly figures for the report, each returned as an HTML fragment that needs plotly.js on the page."""

from __future__ import annotations

import numbers

import pandas as pd
import plotly.colors
import plotly.graph_objects as go

from condgen_bench.reports.catalog import label
from condgen_bench.reports.inputs import Objective, is_missing, numeric_epoch, parse_json, spread_of

FIGURE_HEIGHT = 320  # px, every chart but the heatmap
PALETTE = plotly.colors.qualitative.Plotly + plotly.colors.qualitative.D3  # one colour per trial, cycled


def trial_colors(trial_ids) -> dict[str, str]:
    """{trial id: colour}, so a trial keeps its colour in every chart."""
    return {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(dict.fromkeys(trial_ids))}


def to_fragment(fig: go.Figure, height: int = FIGURE_HEIGHT) -> str:
    """The figure as a <div> plus an inline script (no plotly.js, no network)."""
    axis = dict(gridcolor="#e8e8e8", zeroline=False, automargin=True)
    fig.update_layout(template="none", height=height, margin=dict(l=50, r=10, t=40, b=40), xaxis=axis, yaxis=axis,
                      legend=dict(font=dict(size=10)), title=dict(font=dict(size=14)), hovermode="closest")
    return fig.to_html(full_html=False, include_plotlyjs=False, default_width="100%",
                       config={"displaylogo": False, "responsive": True})


def log_axis(values: pd.Series) -> bool:
    """True for positive numbers spanning more than 10x (learning rates and the like)."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    return len(values) > 1 and bool((values > 0).all()) and values.max() > 10 * values.min()


def _sampling_label(text) -> str:
    """protocol.sampling's JSON as "sampler=ddim, steps=25, ..." ("" if missing)."""
    settings = parse_json(text, None)
    if not isinstance(settings, dict):
        return "" if is_missing(text) else str(text)
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def _line_keys(rows: pd.DataFrame) -> pd.Series:
    """Trace name per row: the trial id, plus its sampling settings where a trial has several."""
    sampling = rows.get("protocol.sampling", pd.Series("", index=rows.index)).map(_sampling_label)
    several = sampling.groupby(rows["trial_id"]).transform("nunique") > 1
    return rows["trial_id"].where(~several, rows["trial_id"] + " (" + sampling + ")")


def history_curve(history: pd.DataFrame, column: str, colors: dict[str, str]) -> str | None:
    """A training statistic of history.parquet ("loss", "train/loss_d", ...) against epoch, a line per
    trial; None without values."""
    if history.empty or not {"trial_id", "epoch", column} <= set(history.columns):
        return None
    history = history.dropna(subset=["epoch", column]).sort_values("epoch")
    if history.empty:
        return None
    title = "training loss" if column == "loss" else f"training: {column.removeprefix('train/')}"
    fig = go.Figure(layout=dict(title=title, xaxis_title="epoch"))
    for trial, part in history.groupby("trial_id", sort=False):
        fig.add_scatter(x=part["epoch"], y=part[column], name=trial, mode="lines+markers",
                        marker=dict(size=4), line=dict(color=colors.get(trial)))
    return to_fragment(fig)


def metric_curve(rows: pd.DataFrame, metric: str, colors: dict[str, str], selected: dict[str, int] | None = None) -> str:
    """One metric against epoch, a line per trial (per sampling setting), error bars from its spread; a
    star on each trial's evaluation at the epoch its finalist was scored at (``selected``: {trial id: epoch})."""
    rows = rows.assign(_epoch=numeric_epoch(rows)).dropna(subset=["_epoch", metric]).sort_values("_epoch")
    spread = spread_of(metric, rows.columns)
    fig = go.Figure(layout=dict(title=label(metric), xaxis_title="epoch"))
    for name, part in rows.groupby(_line_keys(rows), sort=False):
        error = dict(type="data", array=part[spread], visible=True) if spread else None
        fig.add_scatter(x=part["_epoch"], y=part[metric], name=name, mode="lines+markers", error_y=error,
                        line=dict(color=colors.get(part["trial_id"].iloc[0])))
    marked = rows[[selected.get(t) == e for t, e in zip(rows["trial_id"], rows["_epoch"])]] if selected else rows.iloc[0:0]
    marked = marked.drop_duplicates("trial_id")  # the own sampler's row first where a trial has several
    if len(marked):
        fig.add_scatter(x=marked["_epoch"], y=marked[metric], name="finalist scored here", mode="markers",
                        text=marked["trial_id"], hovertemplate="%{text}: finalist scored at epoch %{x}<extra></extra>",
                        marker=dict(symbol="star", size=16, color=[colors.get(t) for t in marked["trial_id"]],
                                    line=dict(color="#222", width=1)))
    return to_fragment(fig)


def hyperparameter_scatter(last: pd.DataFrame, param: str, obj: Objective) -> str | None:
    """The objective at each trial's last evaluation against one swept parameter, a colour per method."""
    rows = last.dropna(subset=[param, obj.metric])
    if rows.empty:
        return None
    numeric = pd.to_numeric(rows[param], errors="coerce")
    x = numeric if numeric.notna().all() else rows[param].astype(str)
    name = param.removeprefix("config.")
    fig = go.Figure(layout=dict(title=f"{label(obj.metric)} vs {name}", xaxis_title=name, yaxis_title=label(obj.metric)))
    methods = rows.get("method", pd.Series("", index=rows.index)).fillna("").astype(str)
    for method in dict.fromkeys(methods):
        part = methods == method
        fig.add_scatter(x=x[part], y=rows.loc[part, obj.metric], name=method or "trials", mode="markers",
                        text=rows.loc[part, "trial_id"], marker=dict(size=10),
                        hovertemplate="%{text}<br>x=%{x}<br>y=%{y}<extra></extra>")
    if x is numeric and log_axis(numeric):
        fig.update_xaxes(type="log")
    return to_fragment(fig)


def cost_scatter(rows: pd.DataFrame, cost: str, metric: str, colors: dict[str, str]) -> str | None:
    """A quality metric against a sampling cost, one point per evaluated (checkpoint, sampling setting)."""
    if cost not in rows or metric not in rows:
        return None
    rows = rows.dropna(subset=[cost, metric])
    if rows.empty:
        return None
    sampling = rows.get("protocol.sampling", pd.Series(None, index=rows.index)).map(_sampling_label)
    epochs = numeric_epoch(rows).map(lambda e: "?" if is_missing(e) else f"{e:g}")
    hover = rows["trial_id"] + "<br>epoch " + epochs + "<br>" + sampling
    fig = go.Figure(layout=dict(title=f"{label(metric)} vs {label(cost)}", xaxis_title=label(cost),
                                yaxis_title=label(metric)))
    for trial in dict.fromkeys(rows["trial_id"]):
        part = rows["trial_id"] == trial
        fig.add_scatter(x=rows.loc[part, cost], y=rows.loc[part, metric], name=trial, mode="markers",
                        text=hover[part], marker=dict(size=10, color=colors.get(trial)),
                        hovertemplate="%{text}<br>x=%{x}<br>y=%{y}<extra></extra>")
    if log_axis(rows[cost]):
        fig.update_xaxes(type="log")
    return to_fragment(fig)


def sampling_curve(rows: pd.DataFrame, metric: str, title: str, axes) -> str | None:
    """One checkpoint's metric against its sampler's cost axis (of ``axes``, the method's sampler_axes: the
    one with cost=True, e.g. the sampling steps), a line per combination of the other axes that take two or
    more values among ``rows``; None unless at least two values of the cost axis were evaluated."""
    cost = next((axis for axis in axes if axis.cost), None)
    if cost is None or not {f"sampling.{cost.name}", metric} <= set(rows.columns):
        return None
    rows = rows.assign(_x=pd.to_numeric(rows[f"sampling.{cost.name}"], errors="coerce")).dropna(subset=["_x", metric])
    if rows["_x"].nunique() < 2:
        return None
    names = pd.Series("", index=rows.index)
    for axis in axes:
        column = f"sampling.{axis.name}"
        if axis.cost or column not in rows or rows[column].nunique() < 2:
            continue
        names = names + rows[column].map(lambda v, a=axis: "" if is_missing(v) else
                                         f"{a.label} {v:g} " if isinstance(v, numbers.Number) else f"{v} ")
    fig = go.Figure(layout=dict(title=title, xaxis_title=cost.label, yaxis_title=label(metric)))
    for name, part in rows.sort_values("_x").groupby(names.str.strip(), sort=False):
        fig.add_scatter(x=part["_x"], y=part[metric], name=name or "default", mode="lines+markers",
                        text=part.get("network_evaluations"),
                        hovertemplate=f"{cost.label} %{{x}}<br>%{{y}}<br>NFE %{{text}}<extra></extra>")
    if log_axis(rows["_x"]):
        fig.update_xaxes(type="log")
    return to_fragment(fig)


def class_heatmap(last: pd.DataFrame, classes: list[str]) -> str | None:
    """Trials x classes of sample_accuracy.<class> (%), with the classifier on real test images as the
    last row: per class where classifier_real_accuracy.<class> is recorded, else its overall accuracy."""
    columns = [f"sample_accuracy.{c}" for c in classes if f"sample_accuracy.{c}" in last]
    rows = last.dropna(subset=columns, how="all") if columns else last.iloc[:0]
    if rows.empty:
        return None
    z = (rows[columns].astype(float) * 100).values.tolist()
    labels = list(rows["trial_id"])
    real = [f"classifier_real_accuracy.{c.split('.', 1)[1]}" for c in columns]
    if all(r in last and last[r].notna().any() for r in real):
        z.append([float(last[r].dropna().iloc[0]) * 100 for r in real])
        labels.append("real test images")
    elif "classifier_real_accuracy" in last and last["classifier_real_accuracy"].notna().any():
        z.append([float(last["classifier_real_accuracy"].dropna().iloc[0]) * 100] * len(columns))
        labels.append("real test images (overall)")
    fig = go.Figure(go.Heatmap(z=z, x=[c.split(".", 1)[1] for c in columns], y=labels, zmin=0, zmax=100,
                               colorscale="Viridis", texttemplate="%{z:.0f}", colorbar=dict(title="%")))
    fig.update_layout(title="sample accuracy per class (%)", yaxis=dict(autorange="reversed", type="category"))
    return to_fragment(fig, height=140 + 26 * len(labels))

