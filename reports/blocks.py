"""Small HTML building blocks shared by the report's sections: formatting, tables, notes, images."""

from __future__ import annotations

import base64
import io
import json
from html import escape

import pandas as pd
from PIL import Image

from condgen_bench.reports import storage
from condgen_bench.reports.inputs import is_missing, json_dict, missing_reasons, parse_json, spread_of


def note(text: str) -> str:
    """A short italic remark, e.g. why a part of the report is skipped."""
    return f'<p class="note">{escape(text)}</p>'


def fmt(value, percent: bool = False) -> str:
    """A value for display: "—" if missing, % if ``percent``, whole numbers as integers, other numbers
    to 4 significant digits, JSON lists/dicts on one line, anything else as text."""
    if is_missing(value):
        return "—"
    if isinstance(value, str):
        parsed = parse_json(value, None)
        return json.dumps(parsed) if isinstance(parsed, (dict, list)) else value
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if not pd.api.types.is_number(value):
        return str(value)
    value = float(value)
    if percent:
        return f"{100 * value:.1f}%"
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"


def is_fraction(metric: str) -> bool:
    """True for metrics shown as percentages (accuracies)."""
    return "accuracy" in metric or metric == "cas"


def distinct(rows: pd.DataFrame, column: str, percent: bool = False) -> list[str]:
    """The column's distinct non-null values, formatted, in order of appearance ([] without the column)."""
    return list(dict.fromkeys(fmt(v, percent) for v in rows[column].dropna())) if column in rows else []


def metric_cell(row: pd.Series, metric: str) -> str:
    """A <td> with the metric ("x ± s" where it has a spread), or "—†" with the reason it is missing."""
    value = row.get(metric)
    if is_missing(value):
        missing = json_dict(row.get("missing"))
        reason = missing.get(metric) or missing.get(metric.split(".")[0]) or missing.get("all")
        return f'<td class="na" title="{escape(str(reason))}">—†</td>' if reason else '<td class="na">—</td>'
    spread = spread_of(metric, row.index)
    text = fmt(value, is_fraction(metric))
    if spread and not is_missing(row.get(spread)):
        text += " ± " + fmt(row[spread], is_fraction(metric))
    return f"<td>{escape(text)}</td>"


def table(header: list[str], lines: list[str]) -> str:
    """A <table> from header texts (escaped here) and ready-made <tr> lines."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    return f"<table><tr>{head}</tr>\n" + "\n".join(lines) + "</table>"


def labelled_row(label: str, cells: list[str]) -> str:
    """A <tr> with a left-aligned header cell and ready-made <td> cells."""
    return f'<tr><th class="l">{escape(label)}</th>{"".join(cells)}</tr>'


def key_values(pairs: list[tuple[str, str]]) -> str:
    """A two-column table of (name, text) pairs, both escaped; several values are given one per line."""
    return "<table>" + "".join(labelled_row(k, [f'<td class="l">{escape(v)}</td>'.replace("\n", "<br>")])
                               for k, v in pairs) + "</table>"


def figures(fragments: list[str | None], empty: str) -> str:
    """The chart fragments in a responsive grid, or the ``empty`` note if none was drawn."""
    drawn = [f for f in fragments if f]
    return f'<div class="figs">{"".join(drawn)}</div>' if drawn else note(empty)


def missing_list(rows: pd.DataFrame) -> str:
    """A list of the reasons metrics are missing, with the trials each applies to ("" if none)."""
    reasons = missing_reasons(rows)
    items = "".join(f"<li><b>{escape('all metrics' if m == 'all' else m)}</b>: {escape(r)} "
                    f'<span class="na">({escape(", ".join(t))})</span></li>' for (m, r), t in reasons.items())
    return f"<p>† Missing values:</p><ul>{items}</ul>" if reasons else ""


def grid_image(run_dir: str, relative, classes: list[str], cell_px: int) -> str:
    """A sample-grid PNG (path relative to ``run_dir``) inline, scaled up so that one of its rows (one
    class) is about ``cell_px`` high, with the class names beside its rows."""
    if is_missing(relative) or not relative:
        return note("no sample grid")
    path = storage.join(run_dir, str(relative))
    if not storage.exists(path):
        return note(f"sample grid {relative} not found")
    data = storage.read_bytes(path)
    width, height = Image.open(io.BytesIO(data)).size
    scale = max(1, min(8, round(cell_px * max(1, len(classes)) / max(1, height))))
    img = (f'<img src="data:image/png;base64,{base64.b64encode(data).decode()}" width="{width * scale}" '
           f'alt="{escape(str(relative))}">')
    labels = "".join(f"<div>{escape(c)}</div>" for c in classes)
    column = f'<div class="labels" style="grid-template-rows:repeat({len(classes)},1fr)">{labels}</div>'
    return f'<div class="gridwrap">{column if classes else ""}{img}</div>'
