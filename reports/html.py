"""The run report: one self-contained HTML file (plotly.js and images inline, nothing fetched)."""

from __future__ import annotations

import os
from html import escape

import plotly.offline

from condgen_bench.reports.run_folder import layout, storage
from condgen_bench.reports import charts
from condgen_bench.reports.blocks import TABLE_SCRIPT
from condgen_bench.reports.inputs import (RunInputs, best_row, class_names, experiment_name, headline_metrics, last_evaluations,
                            load_inputs, merge_inputs, metric_columns, objective, split_stages, swept_columns)
from condgen_bench.reports.sections import DatasetView, dataset_section, header_section, leaderboard_section

CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:1280px;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.3em;border-bottom:1px solid #ccc;margin-top:1.6em}h3{font-size:1.1em}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}
th,td{border:1px solid #ddd;padding:2px 7px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}tr.faded{color:#888}th[title]{cursor:help}th.group{background:#e4e9f2}
td.top{font-weight:700;background:#e6f4e6}td.tie{background:#f2f8f2}
table.sortable th{cursor:pointer}th[data-sorted=up]:after{content:" \\25B2"}th[data-sorted=down]:after{content:" \\25BC"}
input.filter{margin:.3em 0;padding:2px 6px;width:22em}p.summary{max-width:60em;font-size:15px}tr.best td{background:#fff2bf;font-weight:600}
.na{color:#999}.note{color:#777;font-style:italic}.reason{color:#a33;font-size:12px;max-width:28em;text-align:left}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:8px}
.gridwrap{display:flex;gap:8px;margin:.5em 0}
.gridwrap img{image-rendering:pixelated;max-width:100%;height:auto;align-self:flex-start;min-width:0}
.labels{display:grid;font-size:12px}.labels div{display:flex;align-items:center;justify-content:flex-end}
code{font-size:12px;background:#f6f6f6;padding:0 3px}
"""


def build_report(run_dirs: str | list[str], output: str | None = None) -> str:
    """Read one finished run directory, or several (local paths or URIs), and write the report: to
    ``output``, else ``run_dir/report.html`` for one run and ``report.html`` in the working directory for
    several. Returns the path written. Several runs make one page: a leaderboard per dataset across
    them, then each dataset's sections."""
    runs = [run_dirs] if isinstance(run_dirs, str) else list(run_dirs)
    inputs = merge_inputs([load_inputs(run) for run in runs])
    views = dataset_views(inputs)
    body = [header_section(inputs), leaderboard_section(views)] + [dataset_section(v) for v in views]
    path = output or (layout.run_file(runs[0], layout.REPORT) if len(runs) == 1 else os.path.abspath(layout.REPORT))
    storage.write_bytes(path, page(experiment_name(inputs), "\n".join(body)).encode("utf-8"))
    return path


def page(title: str, body: str) -> str:
    """A whole HTML document with plotly.js inlined once in the head."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{CSS}</style>\n<script>{plotly.offline.get_plotlyjs()}</script>\n</head>"
            f"<body>\n{body}\n<script>{TABLE_SCRIPT}</script>\n</body></html>\n")


def dataset_views(inputs: RunInputs) -> list[DatasetView]:
    """A view per value of the results' dataset column (one view if there is no such column)."""
    results = inputs.results
    if "dataset" in results:
        groups = results.groupby(results["dataset"].fillna("(unknown)").astype(str), sort=False)
    else:
        groups = [((inputs.summary or {}).get("name", "dataset"), results)]
    views = []
    for name, rows in groups:
        obj = objective(rows, inputs.config)
        trials, finalists = split_stages(rows)
        last = last_evaluations(trials, obj)
        metrics = metric_columns(rows)
        views.append(DatasetView(inputs, str(name), trials, last, obj, metrics, headline_metrics(metrics),
                                 class_names(rows, inputs.summary_for(str(name))), swept_columns(rows), best_row(last, obj),
                                 charts.trial_colors(last["trial_id"]), finalists))
    return views
