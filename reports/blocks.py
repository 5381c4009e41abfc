"""Small HTML building blocks shared by the report's sections: formatting, tables, notes, images."""

from __future__ import annotations

import base64
import io
import json
import math
from html import escape

import pandas as pd
from PIL import Image

from condgen_bench.reports.run_folder import layout, storage
from condgen_bench.reports.catalog import label as metric_label, lookup
from condgen_bench.reports.inputs import is_missing, json_dict, missing_reasons, parse_json, spread_of


def finalists_with(finalists: pd.DataFrame, column: str) -> pd.DataFrame:
    """The finalist rows that have a value in ``column`` (empty where none has, or the column is absent)."""
    return finalists.iloc[0:0] if column not in finalists else finalists.dropna(subset=[column])


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
    """True for metrics shown x 100 (as % or points): by the catalog, else by name (accuracies)."""
    entry = lookup(metric)
    return entry.unit in ("%", "points") if entry is not None else "accuracy" in metric or metric == "cas"


def metric_title(metric: str) -> str:
    """The hover text of a column: its definition, range and direction (the column name where uncatalogued)."""
    entry = lookup(metric)
    if entry is None:
        return f"{metric} (not in the metric catalog)"
    bounds = "" if entry.low is None and entry.high is None else \
        f" Range {fmt(entry.low) if entry.low is not None else '-inf'} to " \
        f"{'the number of classes' if entry.high == 'classes' else fmt(entry.high) if entry.high is not None else 'inf'}."
    better = {"max": " Higher is better.", "min": " Lower is better."}.get(entry.direction, "")
    clock = (" Wall clock on the machine that ran it." if entry.wall_clock
             else " Portable: the same on any machine." if entry.portable else "")
    spread = f" ± is its {entry.spread_kind}." if entry.spread_kind and entry.name == metric else ""
    return f"{entry.definition}.{bounds}{better}{clock}{spread} Column {metric}."


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
    entry = lookup(metric)
    spread = entry.spread if entry is not None and entry.name == metric and entry.spread in row.index \
        else spread_of(metric, row.index)
    if spread and not is_missing(row.get(spread)):
        return f"<td>{escape(with_spread(float(value), float(row[spread]), metric))}</td>"
    return f"<td>{escape(fmt(value, is_fraction(metric)))}</td>"


def with_spread(value: float, spread: float, metric: str) -> str:
    """"value ± spread" to the spread's second significant digit (6.53 ± 0.38, 67.1% ± 1.6%); fractions
    x 100, with "%" where the catalog's unit is "%" (points have none)."""
    scale = 100 if is_fraction(metric) else 1
    entry = lookup(metric)
    suffix = "%" if scale == 100 and (entry is None or entry.unit == "%") else ""
    if not math.isfinite(spread) or spread <= 0 or not math.isfinite(value):
        return f"{fmt(value * scale)}{suffix} ± {fmt(spread * scale)}{suffix}"
    digits = min(6, max(0, 1 - math.floor(math.log10(spread * scale))))
    return f"{value * scale:.{digits}f}{suffix} ± {spread * scale:.{digits}f}{suffix}"


def table(header: list[str | tuple[str, str]], lines: list[str], sortable: bool = False) -> str:
    """A <table> from header texts, or (text, hover text) pairs (escaped here), and ready-made <tr> lines;
    ``sortable``: its rows sort by a clicked heading and filter by typed text (TABLE_SCRIPT, in the page)."""
    head = "".join(f'<th title="{escape(h[1])}">{escape(h[0])}</th>' if isinstance(h, tuple) else f"<th>{escape(h)}</th>"
                   for h in header)
    if sortable:
        return (f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>\n' + "\n".join(lines)
                + "</tbody></table>")
    return f"<table><tr>{head}</tr>\n" + "\n".join(lines) + "</table>"


# Sorting and filtering of table.sortable, inline (the page fetches nothing): a filter box above each; a
# click on a heading sorts by that column (numbers by value, "—" last), a second click reverses.
TABLE_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var body = table.tBodies[0];
  var box = document.createElement("input");
  box.type = "search"; box.placeholder = "filter rows"; box.className = "filter";
  table.parentNode.insertBefore(box, table);
  box.addEventListener("input", function () {
    var words = box.value.toLowerCase();
    Array.prototype.forEach.call(body.rows, function (row) {
      row.style.display = row.textContent.toLowerCase().indexOf(words) >= 0 ? "" : "none";
    });
  });
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
    th.addEventListener("click", function () {
      var down = th.getAttribute("data-sorted") === "up";
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) { c.removeAttribute("data-sorted"); });
      th.setAttribute("data-sorted", down ? "down" : "up");
      var key = function (row) {
        var text = row.cells[column] ? row.cells[column].textContent.replace("\u2605", "").trim() : "";
        return /^[-+]?[0-9]*[.]?[0-9]+(e[-+]?[0-9]+)?%?(\\s|$)/i.test(text) ? parseFloat(text) : text;
      };
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        var missingX = x === "" || x === "\u2014" || x === "\u2014\u2020", missingY = y === "" || y === "\u2014" || y === "\u2014\u2020";
        if (missingX !== missingY) { return missingX ? 1 : -1; }
        var order = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
        return down ? -order : order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def labelled_row(label: str, cells: list[str], title: str = "") -> str:
    """A <tr> with a left-aligned header cell (``title``: its hover text) and ready-made <td> cells."""
    hover = f' title="{escape(title)}"' if title else ""
    return f'<tr><th class="l"{hover}>{escape(label)}</th>{"".join(cells)}</tr>'


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
    """A sample-grid PNG (path relative to ``run_dir``, or absolute: several runs) inline, scaled up so that one of its rows (one
    class) is about ``cell_px`` high, with the class names beside its rows."""
    if is_missing(relative) or not relative:
        return note("no sample grid")
    path = layout.record_file(run_dir, relative)
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
