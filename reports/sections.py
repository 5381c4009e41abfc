"""The report's sections: each takes what it shows and returns an HTML string."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from html import escape

import pandas as pd

from condgen_bench.models import METHODS
from condgen_bench.reports import charts
from condgen_bench.reports.blocks import (distinct, figures, finalists_with, fmt, grid_image, is_fraction, key_values,
                                          labelled_row, metric_cell, metric_label, metric_title, missing_list, note, table,
                                          with_spread)
from condgen_bench.reports.catalog import METRICS, lookup
from condgen_bench.reports import paired
from condgen_bench.reports.inputs import (COST_METRICS, Objective, RunInputs, aggregate_seeds, best_row, experiment_name,
                                          is_missing, json_dict, rows_at_last_epoch, sort_best_first, spread_of)
from condgen_bench.reports.pareto import equal_compute_table, front_points, leader_sentence, pareto_section
from condgen_bench.reports.study import augment_study_section
from condgen_bench.reports.noise import METHOD as NOISE_METHOD, PerSampleFiles, describe, difference

# Metrics drawn against the epoch whenever they have values (others only with two or more epochs).
CURVES_FIRST = ("sample_accuracy", "fid_domain", "kid_domain", "is_domain", "bpd")
COSTS = ("sample_seconds_per_image", "network_evaluations")  # x axes of the quality-against-cost plots
GRID_CELL_PX = 96  # on-screen height of one class row of the best trial's sample grid
OTHER_GRID_CELL_PX = 64  # the same for the other trials' grids
OTHER_GRIDS = 24  # other trials' grids shown, best first (each is ~30 KB inline)


@dataclass
class DatasetView:
    """Everything the sections need about one dataset's rows."""
    inputs: RunInputs
    name: str
    rows: pd.DataFrame  # every results row of this dataset
    last: pd.DataFrame  # one row per trial at its last evaluation, best first
    obj: Objective
    metrics: list[str]  # every metric column
    headline: list[str]  # metrics with a column of their own in the trials table
    classes: list[str]  # in the dataset's class order (the sample grids' row order)
    params: list[str]  # config.* columns of the swept parameters
    best: pd.Series | None  # the best trial's last row
    colors: dict[str, str]  # trial id -> colour, the same in every chart
    finalists: pd.DataFrame  # the finalist stage's rows (every sampler setting), empty if it did not run

    def finalist_rows(self) -> pd.DataFrame:
        """Each finalist's row under its own sampler, best first (by rank within its experiment)."""
        rows = self.finalists
        if rows.empty:
            return rows
        own = rows[rows.get("sampling_setting", pd.Series("default", index=rows.index)).fillna("default") == "default"]
        return sort_best_first(own, self.obj)

    def selected_epochs(self) -> dict[str, tuple[int, str]]:
        """{trial id: (the epoch its finalist was scored at, the rule that chose it)} (harness/best.py); a
        trial read as a smaller budget ("<trial>@<budget>") under that id."""
        rows = self.finalist_rows()
        if rows.empty or "selected_epoch" not in rows:
            return {}
        return {r["trial_id"]: (int(r["selected_epoch"]), str(r.get("selection_rule", "")))
                for _, r in rows.iterrows() if not is_missing(r.get("selected_epoch"))}

    def compute_budget(self) -> float | None:
        """report.compute_budget of the run's config, or of its first experiment that sets one where the run has
        several (a benchmark's config.json) (None: the equal-compute view picks its own)."""
        config = self.inputs.config
        sections = [config.get("report") or {}] + [e.get("report") or {} for e in config.get("experiments") or []]
        return next((r["compute_budget"] for r in sections if r.get("compute_budget")), None)

    def machine(self) -> str:
        """The platform(s) the rows were measured on (version.platform), for labelling wall-clock times."""
        return ", ".join(distinct(self.all_rows(), "version.platform")) or "the machine that ran it"

    def all_rows(self) -> pd.DataFrame:
        """Every row of the dataset, the sweep's and the finalists'."""
        return pd.concat([self.rows, self.finalists]) if len(self.finalists) else self.rows


def header_section(inputs: RunInputs) -> str:
    """Experiment name, run dir, build time, git commit, versions and the trials' statuses."""
    results = inputs.results
    trials = results.drop_duplicates("trial_id", keep="last")
    statuses = trials.get("status", pd.Series("unknown", index=trials.index)).fillna("unknown").value_counts()
    pairs = [("run directory", inputs.run_dir),
             ("built", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
             ("git commit", "\n".join(distinct(results, "git_commit")) or "unknown"),
             ("trials", f"{len(trials)}{runs_note(trials)}: " + ", ".join(f"{n} {s}" for s, n in statuses.items()))]
    pairs += [(c.removeprefix("version."), "\n".join(distinct(results, c)))
              for c in results.columns if c.startswith("version.")]
    refused = (note(f"not embedded: {len(inputs.refused)} record files that the results name outside their run "
                    "folder (the report shows files of the run only): " + "; ".join(inputs.refused[:20]))
               if inputs.refused else "")
    return f"<h1>{escape(experiment_name(inputs))}</h1>\n" + key_values(pairs) + refused


def runs_note(trials: pd.DataFrame) -> str:
    """" (2 training runs, the smaller epoch budgets read off them)" where budgets were folded (a
    budget_of column), else ""."""
    if "budget_of" not in trials or trials["budget_of"].isna().all():
        return ""
    runs = trials.loc[trials["budget_of"].isna(), "trial_id"].nunique()
    return f" ({runs} training run{'s' if runs != 1 else ''}, the smaller epoch budgets read off them)"


# the leaderboard's columns, in order (each shown where some method has a value)
LEADERBOARD = ("sample_accuracy", "fid_domain", "kid_domain", "is_domain", "fid_inception", "fid_inf_inception",
               "kid_inception", "is_inception", "bpd", "cas", "aug_gain", "study_best_gain")


def leaderboard_section(views: list[DatasetView]) -> str:
    """The top of the page: per dataset, one row per method at its best configuration (its finalist
    where the finalist stage ran, else its best trial's last evaluation; a mean ± std where the
    configuration ran with several seeds) with the headline metrics, each with its spread and direction;
    per column the best value marked, and the figures within noise of it (reports/noise.py)."""
    out = "<h1>Leaderboard</h1>"
    for view in views:
        rows = leaderboard_rows(view)
        out += f"<h2>{escape(view.name)}</h2>"
        if not rows:
            out += note(f"no method has a value for {view.obj.metric}")
            continue
        files = PerSampleFiles(view.inputs.run_dir)
        out += f'<p class="summary">{escape(summary_text(view, rows, files))}</p>'
        columns = [m for m in LEADERBOARD if any(not is_missing(r.get(m)) for r in rows.values())]
        several_runs = "run" in view.inputs.results and view.inputs.results["run"].nunique() > 1
        seeds = any(int(r.get("seeds", 1) or 1) > 1 for r in rows.values())
        header = ["method", *(["run"] if several_runs else []), "trial", "stage", "epoch",
                  *(["seeds"] if seeds else []), *((metric_label(m), metric_title(m)) for m in columns)]
        marks = {m: noise_marks(view, rows, m, files) for m in columns}
        lines = []
        for method, r in rows.items():
            cells = [f'<td class="l"><b>{escape(method)}</b></td>']
            cells += [f'<td class="l">{escape(fmt(r.get("run")))}</td>'] if several_runs else []
            cells += [f'<td class="l">{escape(r["trial_id"])}</td>',
                      f'<td class="l">{escape(fmt(r.get("stage")))}</td>', f"<td>{escape(fmt(r.get('epoch')))}</td>"]
            cells += [f"<td>{escape(fmt(r.get('seeds')))}</td>"] if seeds else []
            for m in columns:
                cells.append(marked_cell(metric_cell(r, m), *marks[m].get(method, ("", ""))))
            lines.append(f"<tr>{''.join(cells)}</tr>")
        marked = ("; in each column ★ marks the best and ≈ the figures within noise of it: not distinguishable "
                  f"from it at {paired.LEVEL:.0%} (the interval of the difference holds 0), which is not the same as "
                  "equal (hover a figure for its difference, "
                  "interval and test; the tests are named under the evaluation protocol)") if len(rows) > 1 else ""
        out += table(header, lines) + note(f"methods ranked by {metric_label(view.obj.metric)}; ± is "
                                           f"{spread_legend(columns)}{marked}")
        points = front_points(view.rows)
        sentence, equal, budget = leader_sentence(points, view.obj, view.compute_budget())
        if sentence:
            out += f'<p class="summary">{escape(sentence)}</p>' + equal_compute_table(equal, view.obj, budget, points)
    return out


def spread_legend(metrics: list[str]) -> str:
    """What "±" shows in columns of ``metrics``, from the catalog: "the bootstrap standard error (accuracy on
    samples, FID (domain classifier)); ..."; a seed mean's is the std over its seeds."""
    kinds: dict[str, list[str]] = {}
    for m in metrics:
        entry = lookup(m)
        if entry is not None and entry.spread_kind:
            kinds.setdefault(entry.spread_kind, []).append(entry.label)
    parts = [f"the {kind} ({', '.join(labels)})" for kind, labels in kinds.items()]
    return "; ".join(parts + ["for a row of several seeds, the std over its seeds"])


def noise_marks(view: DatasetView, rows: dict[str, pd.Series], metric: str,
                files: PerSampleFiles) -> dict[str, tuple[str, str]]:
    """{method: (mark, hover text)} in one leaderboard column: "best" for the best value (ties too),
    "tie" for a figure within noise of it, "" beyond noise or without a verdict. One row: no marks."""
    top = best_value(rows.values(), metric)
    if top is None or len(rows) < 2:
        return {}
    leader = next(m for m, r in rows.items() if not is_missing(r.get(metric)) and float(r[metric]) == top)
    scale = 100 if is_fraction(metric) else 1
    out = {}
    for method, r in rows.items():
        if is_missing(r.get(metric)):
            continue
        if float(r[metric]) == top:
            out[method] = ("best", "the best value of the column")
            continue
        diff = difference(metric, r, rows[leader], files)
        if diff is None:
            out[method] = ("", f"no spread to judge the difference from {leader}'s")
        else:
            verdict = "within noise of" if diff.within_noise else "beyond noise from"
            out[method] = ("tie" if diff.within_noise else "",
                           f"{verdict} {leader}'s: difference {describe(diff, scale)}")
    return out


def marked_cell(cell: str, mark: str, title: str) -> str:
    """A metric <td> with its noise mark: ★ and class "top" for the best, ≈ and class "tie" within noise."""
    if not mark and not title:
        return cell
    body = cell.removeprefix("<td>").removesuffix("</td>")
    symbol = {"best": " ★", "tie": " ≈"}.get(mark, "")
    css = {"best": ' class="top"', "tie": ' class="tie"'}.get(mark, "")
    return f'<td{css} title="{escape(title)}">{body}{symbol}</td>'


def summary_text(view: DatasetView, rows: dict[str, pd.Series], files: PerSampleFiles | None = None) -> str:
    """A paragraph written from the figures: who leads on the sweep metric and on FID and by how much,
    whether that is within noise (reports/noise.py), the cheapest and dearest sampling and training, and
    which leaderboard figures are missing and why."""
    files = files or PerSampleFiles(view.inputs.run_dir)
    sentences, board = [], rows
    if len(rows) == 1:  # one method: its configurations are what compete (each trial at its last evaluation)
        method = next(iter(rows))
        rows = {configuration_name(method, r, view.params): r
                for _, r in aggregate_seeds(view.last).iterrows()}
    for metric in dict.fromkeys([view.obj.metric, "fid_domain", "fid_inception"]):
        ranked = [(m, r) for m, r in rows.items() if not is_missing(r.get(metric))]
        entry = lookup(metric)
        if not ranked or entry is None or entry.direction == "none":
            continue
        ranked.sort(key=lambda mr: float(mr[1][metric]), reverse=entry.direction == "max")
        (first, a), rest = ranked[0], ranked[1:]
        shown = lambda r: fmt(r[metric], is_fraction(metric))  # noqa: E731
        if not rest:
            sentences.append(f"{first} is the only method with {entry.label}: {shown(a)}.")
            continue
        second, b = rest[0]
        scale, unit = (100, " points") if is_fraction(metric) else (1, "")
        diff = difference(metric, a, b, files)
        if diff is None:
            verdict = "no spread is recorded to judge whether that is noise"
        else:
            verdict = (f"{'beyond' if not diff.within_noise else 'within'} noise: the {paired.LEVEL:.0%} interval "
                       f"of the difference is [{diff.low * scale:.3g}, {diff.high * scale:.3g}]{unit} "
                       f"({'paired' if diff.method.startswith('paired') else 'unpaired'})")
        sentences.append(f"On {entry.label} ({'higher' if entry.direction == 'max' else 'lower'} is better) "
                         f"{first} leads with {shown(a)} against {second}'s {shown(b)}: a margin of "
                         f"{abs(float(a[metric]) - float(b[metric])) * scale:.3g}{unit}, {verdict}.")
    machine = view.machine()
    for cost, what, unit in (("network_evaluations", "Sampling costs", " network calls per image"),
                             ("train_seconds", "Training took", f" s (wall clock on {machine})")):
        priced = {}
        for method, r in rows.items():
            if not is_missing(r.get(cost)):
                priced.setdefault(float(r[cost]), []).append(method)
        if len(priced) > 1:
            low, high = min(priced), max(priced)
            sentences.append(f"{what} from {low:.3g} ({', '.join(priced[low])}) to {high:.3g} "
                             f"({', '.join(priced[high])}){unit}.")
    missing: dict[str, dict[str, list[str]]] = {}  # reason -> label -> methods
    for method, r in board.items():  # the leaderboard's rows
        reasons = json_dict(r.get("missing"))
        for metric in LEADERBOARD:
            reason = reasons.get(metric) or reasons.get("all")
            if is_missing(r.get(metric)) and reason:
                labels = missing.setdefault(str(reason).replace(method, "the method"), {})
                labels.setdefault(lookup(metric).label, []).append(method)
    for reason, labels in missing.items():
        by_methods: dict[tuple, list[str]] = {}
        for label_, methods in labels.items():
            by_methods.setdefault(tuple(methods), []).append(label_)
        sentences += [f"Missing: {', '.join(names)} for {', '.join(methods)} ({reason})."
                      for methods, names in by_methods.items()]
    return " ".join(sentences)


def configuration_name(method: str, row: pd.Series, params: list[str]) -> str:
    """"ddpm c5db7_00003 (model.lr 0.002, train.epochs 13)": the method, trial and its swept settings."""
    settings = ", ".join(f"{p.removeprefix('config.')} {fmt(row.get(p))}" for p in params)
    return f"{method} {row['trial_id']}" + (f" ({settings})" if settings else "")


def leaderboard_rows(view: DatasetView) -> dict[str, pd.Series]:
    """{method: its best row}, best first by the objective: each method's best finalist (own sampler),
    else its best trial at its last evaluation; a configuration run with several seeds as one row of
    means (inputs.aggregate_seeds)."""
    finalists = view.finalist_rows()
    source = aggregate_seeds(finalists if len(finalists) else view.last)
    methods = source.get("method", pd.Series("", index=source.index)).fillna("").astype(str)
    best = {m: best_row(source[methods == m], view.obj) for m in dict.fromkeys(methods)}
    ranked = sort_best_first(pd.DataFrame([r for r in best.values() if r is not None]), view.obj)
    return {str(r.get("method") or "(method unknown)"): r for _, r in ranked.iterrows()}


def best_value(rows, metric: str) -> float | None:
    """The best value of ``metric`` among ``rows`` by its catalog direction (None: no direction or no value)."""
    entry = lookup(metric)
    values = [float(r[metric]) for r in rows if not is_missing(r.get(metric))]
    if entry is None or entry.direction == "none" or not values:
        return None
    return max(values) if entry.direction == "max" else min(values)


def dataset_section(view: DatasetView) -> str:
    """Every section about one dataset, in reading order."""
    parts = [summary_section, finalists_section, intra_class_section, memorization_section, augment_study_section,
             trials_section, pbt_section, curves_section,
             hyperparameter_section, cost_section, pareto_section, sampling_section, per_class_section, samples_section,
             protocol_section]
    return f"<h1>Dataset {escape(view.name)}</h1>\n" + "\n".join(part(view) for part in parts)


def summary_section(view: DatasetView) -> str:
    """Images per class per split, from dataset_summary.json."""
    summary = view.inputs.summary_for(view.name)
    out = "<h2>Dataset</h2>" + "".join(f"<p>fingerprint <code>{escape(f)}</code></p>"
                                       for f in distinct(view.rows, "dataset_fingerprint"))
    several = view.inputs.results.get("dataset", pd.Series(dtype=object)).nunique() > 1
    counts = summary.get("counts")
    if not counts or (several and summary.get("name") != view.name):
        classes = ", ".join(view.classes) or "unknown"
        return out + note(f"no dataset_summary.json for this dataset; classes: {classes}")
    lines = [labelled_row(c, [f"<td>{fmt(counts[s].get(c))}</td>" for s in counts]) for c in view.classes]
    lines.append(labelled_row("total", [f"<td>{sum(counts[s].values())}</td>" for s in counts]))
    options = f"<p>options <code>{escape(fmt(summary['options']))}</code></p>" if summary.get("options") else ""
    return out + table(["class", *counts], lines) + options


def finalists_section(view: DatasetView) -> str:
    """The headline: every finalist (each experiment's best trials, re-scored after the sweep with the full
    suite on more samples) with every metric; without a finalist stage, each method's best trial at its last
    evaluation."""
    finalists = view.finalist_rows()
    if finalists.empty:
        out = f"<h2>Best configuration <small>(by {escape(metric_label(view.obj.metric))})</small></h2>"
        out += note("no finalist stage ran (eval.finalists = 0, or no trial could be scored): the sweep's "
                    "figures at each method's best trial")
        if view.best is None:
            return out + note(f"no trial has a value for {view.obj.metric}")
        columns = leaderboard_rows(view)  # each method's best trial, as the leaderboard has it
    else:
        out = (f"<h2>Finalists <small>(best trials by {escape(metric_label(view.obj.metric))}, scored after the "
               "sweep with the full suite)</small></h2>")
        columns = {f"{r.get('method')} {r['trial_id']}": r for _, r in finalists.iterrows()}
    columns = {name: r for name, r in columns.items() if r is not None}
    spreads = {spread_of(m, view.rows.columns) for m in view.metrics}
    lines = [labelled_row(name, [f"<td>{escape(fmt(r.get(column)))}</td>" for r in columns.values()])
             for name, column in [("trial", "trial_id"), ("epoch", "epoch"), ("samples", "protocol.num_samples")]
             + [(p.removeprefix("config."), p) for p in view.params]]
    shown = [m for m in view.metrics if m not in spreads and "." not in m
             and any(not is_missing(r.get(m)) or m in str(r.get("missing")) for r in columns.values())]
    return out + table(["", *columns], lines + metric_rows(view, shown, list(columns.values())))


def metric_rows(view: DatasetView, metrics: list[str], rows: list[pd.Series]) -> list[str]:
    """<tr> lines of ``metrics`` for ``rows`` (a column each), labelled from the metric catalog (label, unit,
    direction arrow; the definition on hover) in the catalog's order, grouped: the generator's quality,
    the yardsticks it is measured against, and its costs (wall-clock times named with the machine)."""
    order = {name: i for i, name in enumerate(METRICS)}
    machine = view.machine()
    groups = {"quality": "quality", "reference": "yardsticks",
              "cost": f"costs (times: wall clock on {machine}; network calls and training GFLOPs per image: portable)"}
    lines = []
    for kind, title in groups.items():
        part = sorted((m for m in metrics if (lookup(m).kind if lookup(m) else "quality") == kind),
                      key=lambda m: order.get(m, len(order)))
        if part:
            lines.append(f'<tr><th class="l group" colspan="{len(rows) + 1}">{escape(title)}</th></tr>')
            lines += [labelled_row(metric_label(m), [metric_cell(r, m) for r in rows], metric_title(m)) for m in part]
    return lines


def intra_class_section(view: DatasetView) -> str:
    """Each finalist's FID per class (its generated images of a class against that class's real test
    images, in the domain features) and their mean; empty without finalists."""
    finalists = view.finalist_rows()
    columns = [f"fid_intra_domain.{c}" for c in view.classes if f"fid_intra_domain.{c}" in finalists]
    if finalists.empty or not columns:
        return ""
    header = ["class", *(f"{r.get('method')} {r['trial_id']}" for _, r in finalists.iterrows())]
    lines = [labelled_row(c.split(".", 1)[1], [metric_cell(r, c) for _, r in finalists.iterrows()]) for c in columns]
    lines.append(labelled_row("mean over classes", [metric_cell(r, "fid_intra_domain") for _, r in finalists.iterrows()]))
    return ("<h2>Finalists: intra-class FID <small>(domain features; each class's samples against its real "
            "test images)</small></h2>" + table(header, lines))


def trials_section(view: DatasetView) -> str:
    """Every trial at its last evaluation, best first, the best highlighted; then why values are missing."""
    best_id = None if view.best is None else view.best["trial_id"]
    params = [p.removeprefix("config.") for p in view.params]
    # metrics of the sweep's evaluations (the finalist stage's own, such as CAS, are in the table above)
    headline = [m for m in view.headline if m in view.last and view.last[m].notna().any()]
    selected = view.selected_epochs()
    scored_at = [("finalist at epoch", "the epoch the finalist stage scored: the trial's best evaluated (hover "
                                       "for the rule)")] if selected else []
    header = ["trial", "method", "status", *params, "epoch", *scored_at,
              *((metric_label(m), metric_title(m)) for m in headline)]
    lines = []
    for _, row in view.last.iterrows():
        reason = "" if is_missing(row.get("status_reason")) else str(row["status_reason"])
        status = escape(fmt(row.get("status"))) + (f'<div class="reason">{escape(reason)}</div>' if reason else "")
        mark = "★ " if row["trial_id"] == best_id else ""
        cells = ([f'<td class="l">{mark}{escape(row["trial_id"])}</td>',
                  f'<td class="l">{escape(fmt(row.get("method")))}</td>', f'<td class="l">{status}</td>']
                 + [f"<td>{escape(fmt(row.get(c)))}</td>" for c in [*view.params, "epoch"]]
                 + ([selected_cell(selected.get(row["trial_id"]))] if selected else [])
                 + [metric_cell(row, m) for m in headline])
        lines.append(f'<tr{" class=best" if mark else ""}>{"".join(cells)}</tr>')
    return ("<h2>All trials <small>(last evaluation, best first; click a heading to sort, type to filter)"
            "</small></h2>" + table(header, lines, sortable=True)
            + missing_list(view.last))


def selected_cell(selected: tuple[int, str] | None) -> str:
    """The trials table's cell of the epoch a finalist was scored at, its rule on hover ("—": no finalist)."""
    if selected is None:
        return "<td>—</td>"
    epoch, rule = selected
    return f'<td title="{escape(rule)}">{epoch}</td>'


def pbt_section(view: DatasetView) -> str:
    """Population-based training's exploits, in the order they happened: which trial took whose weights at
    which epoch, both scores then, and the settings before and after ("" where no trial exploited). They are
    the results' restart records (harness/pbt.py writes them: a "donor" and the scores beside the settings)."""
    if "restarts" not in view.rows:
        return ""
    events = []
    for trial_id, text in view.rows.drop_duplicates("trial_id")[["trial_id", "restarts"]].itertuples(index=False):
        if not is_missing(text):
            events += [{"trial": trial_id, **e} for e in json.loads(text)]
    if not events:
        return ""
    events.sort(key=lambda e: (e["trial_epoch"], e["trial"]))
    metric = events[0]["metric"]
    percent = is_fraction(metric)
    lines = []
    for e in events:
        donor = e.get("donor_settings") or {}
        changes = "; ".join(f"{path} {fmt(e['before'].get(path))} → {fmt(value)}"
                            + (f" (the donor's {fmt(donor[path])})" if path in donor else "")
                            for path, value in e["after"].items())
        cells = [escape(str(e["trial_epoch"])), escape(e["trial"]), escape(fmt(e["score"], percent)), escape(e["donor"]),
                 escape(fmt(e["donor_score"], percent)), escape(str(e["epoch"]))]
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + f'<td class="l">{escape(changes)}</td></tr>')
    header = ["at epoch", "trial", metric_label(metric), "took the weights of", f"its {metric_label(metric)}",
              "from its epoch", "settings (its own → the donor's, perturbed)"]
    return (f"<h2>Population-based training <small>({len(events)} exploit{'s' if len(events) != 1 else ''}: the "
            "bottom of the population takes the weights of one of the top and perturbs its settings; a trial's "
            "settings in the tables are its last)</small></h2>" + table(header, lines))


def curves_section(view: DatasetView) -> str:
    """Training statistics (history.parquet: the loss, then the method's own, e.g. a GAN's
    discriminator loss) and the metrics against the epoch, a line per trial, each finalist's scored epoch
    marked."""
    history = view.inputs.history
    if "trial_id" in history:
        history = history[history["trial_id"].isin(set(view.rows["trial_id"]))]
    training = [charts.history_curve(history, c, view.colors)
                for c in ["loss", *(c for c in history.columns if c.startswith("train/"))]]
    selected = {trial: epoch for trial, (epoch, _) in view.selected_epochs().items()}
    curves = [charts.metric_curve(view.rows, m, view.colors, selected) for m in curve_metrics(view)]
    return ("<h2>Curves</h2>" + ("" if any(training) else note("no training history"))
            + figures([*training, *curves], "no metric to plot"))


def curve_metrics(view: DatasetView) -> list[str]:
    """The objective and CURVES_FIRST where they have values, then any other headline metric with two or
    more evaluated epochs in one trial (costs, yardsticks such as the classifier's real accuracy, and the
    parts of a figure left out: the metric catalog's kind and direction)."""
    if "epoch" not in view.rows:
        return []
    out = []
    for metric in dict.fromkeys([view.obj.metric, *CURVES_FIRST, *view.headline]):
        entry = lookup(metric)
        if metric not in view.rows or metric in COST_METRICS or (entry is not None and (
                entry.kind != "quality" or entry.direction == "none")):  # costs, yardsticks, parts of a figure
            continue
        points = view.rows[["trial_id", "epoch", metric]].dropna()
        if len(points) and (metric in (view.obj.metric, *CURVES_FIRST)
                            or points.groupby("trial_id")["epoch"].nunique().max() > 1):
            out.append(metric)
    return out


def hyperparameter_section(view: DatasetView) -> str:
    """The objective at each trial's last evaluation against each swept parameter."""
    scatters = [charts.hyperparameter_scatter(view.last, p, view.obj) for p in view.params
                if view.obj.metric in view.last]
    return (f"<h2>Hyperparameters against {escape(metric_label(view.obj.metric))}</h2>"
            + figures(scatters, "no swept parameter with values of the metric"))


def cost_section(view: DatasetView) -> str:
    """Quality against sampling cost: a point per sampling setting evaluated on each finalist (without
    finalists: on each trial's last checkpoint)."""
    rows = view.finalists if len(view.finalists) else rows_at_last_epoch(view.rows)
    scatters = [charts.cost_scatter(rows, cost, metric, view.colors)
                for metric in dict.fromkeys([view.obj.metric, "fid_domain"]) for cost in COSTS]
    which = "finalists" if len(view.finalists) else "each trial's last evaluation"
    return (f"<h2>Quality against sampling cost <small>({which})</small></h2>"
            + figures(scatters, "no sampling costs recorded"))


def sampling_section(view: DatasetView) -> str:
    """Quality against the sampler's cost axis (the method's sampler_axes: DDPM's steps) for every finalist
    evaluated under a sampling sweep, best first; empty when no run swept the sampler."""
    rows = view.finalists
    if rows.empty:
        return ""
    out = ""
    for trial in dict.fromkeys(view.finalist_rows()["trial_id"]):
        part = rows[rows["trial_id"] == trial]
        epoch = fmt(part["epoch"].iloc[0]) if "epoch" in part and len(part) else "?"
        axes = sampler_axes(part["method"].iloc[0]) if "method" in part else ()
        charts_ = [charts.sampling_curve(part, metric, f"{trial}, epoch {epoch}: {metric}", axes)
                   for metric in dict.fromkeys([view.obj.metric, "fid_domain"])]
        if any(charts_):
            out += figures(charts_, "")
    return out and ("<h2>Quality against sampler settings <small>(finalists' checkpoints, same weights, "
                    "each family's sampler settings)</small></h2>" + out)


def sampler_axes(method: str) -> tuple:
    """The sampler axes a family declares (models: Method.sampler_axes); () for a name no longer registered."""
    entry = METHODS.get(method)
    return entry.cls.sampler_axes if entry is not None else ()


def per_class_section(view: DatasetView) -> str:
    """Sample accuracy per class and trial, with the classifier on real images for reference."""
    heatmap = charts.class_heatmap(view.last, view.classes)
    return "<h2>Per-class accuracy</h2>" + (heatmap or note("no per-class accuracy recorded"))


def memorization_section(view: DatasetView) -> str:
    """Each finalist's closest samples to the training set: the gallery of its 8 closest sample / training
    image pairs (generated above, the nearest training image below, closest first) with its memorized
    share; empty where no finalist has one."""
    shown = finalists_with(view.finalist_rows(), "memorization_grid")
    if shown.empty:
        return ""
    out = ("<h2>Memorization</h2>" + note("each finalist's 8 samples closest to a training image (domain "
           "features), closest first: the sample above, its nearest training image below; copies of the "
           "training set look alike, and augmenting with them is not augmentation"))
    for _, r in shown.iterrows():
        share = (with_spread(float(r["memorized_share"]), float(r["memorized_share_std"]), "memorized_share")
                 if not is_missing(r.get("memorized_share_std")) else fmt(r.get("memorized_share"), True))
        out += (f"<h3>{escape(str(r.get('method')))} {escape(r['trial_id'])}: memorized share {share}</h3>"
                + grid_image(view.inputs.run_dir, r["memorization_grid"], ["generated", "training"], GRID_CELL_PX))
    return out


def samples_section(view: DatasetView) -> str:
    """The best finalist's (else the best trial's) sample grid, large, then every other trial's grid in a
    collapsed <details>."""
    out = "<h2>Samples</h2>"
    finalists = view.finalist_rows()
    best = finalists.iloc[0] if len(finalists) else view.best
    best_id = None if best is None else best["trial_id"]
    if best_id is None:
        out += note("no best trial")
    else:
        stage = "finalist" if len(finalists) else "best trial"
        out += (f"<p>{stage} <b>{escape(best_id)}</b>, epoch {fmt(best.get('epoch'))}, "
                f"{fmt(best.get('protocol.num_samples'))} samples scored</p>"
                + grid_image(view.inputs.run_dir, best.get("sample_grid"), view.classes, GRID_CELL_PX))
    if "sample_grid" not in view.last:
        return out
    others = view.last[view.last["trial_id"] != best_id].dropna(subset=["sample_grid"])
    shown = others.head(OTHER_GRIDS)  # best first: the page stays small with hundreds of trials
    grids = "".join(f"<h3>{escape(r['trial_id'])} (epoch {fmt(r.get('epoch'))})</h3>"
                    + grid_image(view.inputs.run_dir, r["sample_grid"], view.classes, OTHER_GRID_CELL_PX)
                    for _, r in shown.iterrows())
    rest = (note(f"the other {len(others) - len(shown)} trials' grids are in the run folder (sample_grid column "
                 "of results.parquet)") if len(others) > len(shown) else "")
    summary = f"other trials ({len(shown)} best of {len(others)})" if rest else f"other trials ({len(others)})"
    return out + (f"<details><summary>{summary}</summary>{grids}{rest}</details>" if grids else "")


def decided_and_reported(rows: pd.DataFrame) -> str:
    """Which real split the sweep's decisions were made on (the trial stages' rows: the sweep metric, the
    scheduler's choices, the finalists) and which one the finalists' figures report on, with their sizes."""
    def splits(stage_rows: pd.DataFrame) -> str:
        if "protocol.reference_split" not in stage_rows or stage_rows.empty:
            return "—"
        sizes = stage_rows.groupby("protocol.reference_split")["protocol.reference_size"].first()
        return ", ".join(f"the {split} split ({fmt(size)} images)" for split, size in sizes.items())
    if "stage" not in rows:
        return "—"
    decided = splits(rows[rows["stage"] != "finalist"])
    reported = splits(rows[rows["stage"] == "finalist"])
    return (f"decided on {decided}: the trial stages' figures, which the sweep metric, the scheduler and "
            f"the choice of finalists read; reported on {reported}: the finalists' figures, which no decision "
            "looked at")


def protocol_section(view: DatasetView) -> str:
    """The protocol.* values (each distinct value, one per line, where rows differ), the classifier's
    accuracy on real images, and why metrics are missing."""
    rows = view.all_rows()
    pairs = [("decided on / reported on", decided_and_reported(rows))]
    pairs += [(c.removeprefix("protocol."), "\n".join(distinct(rows, c)) or "—")
              for c in rows.columns if c.startswith("protocol.")]
    real = distinct(rows, "classifier_real_accuracy", percent=True)
    pairs.append(("classifier accuracy on real test images", "\n".join(real) or "—"))
    pairs.append(("leaderboard noise marks", NOISE_METHOD))
    return "<h2>Evaluation protocol</h2>" + key_values(pairs) + missing_list(rows)
