"""Reading a finished run directory, and the views of results.parquet that the report is built from."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import posixpath
from dataclasses import dataclass, field

import pandas as pd

from condgen_bench.reports.run_folder import layout, storage

# Columns that describe a row rather than measure something; every other numeric column that is
# not config.*, protocol.* or version.* is a metric, so new metrics show up without code changes.
ROW_COLUMNS = {"trial_id", "method", "config_hash", "status", "status_reason", "dataset", "dataset_fingerprint",
               "git_commit", "epoch", "step", "missing", "sample_grid", "per_sample", "stage", "finalist_rank",
               "sampling_setting", "run", "seeds", "budget_of", "restarts", "memorization_grid", "augment_study", "augment_study_grid",
               "selected_epoch", "selection_rule", "train_device_seconds_by_kind", "on_front"}
NON_METRIC_PREFIXES = ("config.", "protocol.", "version.", "sampling.")  # sampling.<axis>: the sampler setting
# metric "x_se" / "x_std" / "x_stderr" is shown as "x ± s" beside metric "x" (the first found; the catalog
# names the one that is each figure's spread, reports/catalog.py)
SPREAD_SUFFIXES = ("_se", "_std", "_stderr")
# Costs: shown in the tables and against quality, not drawn as training curves.
COST_METRICS = ("train_seconds", "eval_seconds", "bpd_seconds", "sample_seconds_per_image", "network_evaluations",
                "train_gflops_per_image", "train_images_per_second", "train_tflops", "train_peak_fraction",
                "train_images_seen", "train_flops", "train_device_seconds", "sample_gflops_per_image")


@dataclass
class RunInputs:
    run_dir: str  # the run directory (several runs: their directories, comma-separated)
    results: pd.DataFrame  # results.parquet, one row per (trial, evaluation)
    history: pd.DataFrame  # history.parquet, one row per (trial, training epoch); empty if absent
    summary: dict | None  # dataset_summary.json, None if absent
    config: dict  # config.json, {} if absent
    summaries: dict = field(default_factory=dict)  # several runs: dataset name -> its dataset_summary.json
    refused: list = field(default_factory=list)  # record files named in the results outside their run folder

    def summary_for(self, dataset: str) -> dict:
        """The dataset_summary.json of ``dataset`` ({} if no run has one)."""
        return self.summaries.get(dataset) or self.summary or {}


@dataclass
class Objective:
    metric: str  # column that ranks trials, e.g. "sample_accuracy"
    mode: str  # "max" or "min"


def parse_json(text, default):
    """The value of a JSON string, or ``default`` for None, NaN, or text that is not JSON."""
    if not isinstance(text, str):
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def json_dict(text) -> dict:
    """The dict a JSON string holds, or {} for anything else (None, NaN, a list, text that is not JSON)."""
    value = parse_json(text, {})
    return value if isinstance(value, dict) else {}


def is_missing(value) -> bool:
    """True for None, NaN and pd.NA; False for any other value (lists and dicts included)."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def read_committed(run_dir: str) -> dict[str, bytes]:
    """The bytes of results.parquet and history.parquet (where it exists), checked against
    results_manifest.json when the run has one: raises ValueError when they are not from one write (a
    crash or a full disk between them); a run written before manifests is taken as it is."""
    files = {name: storage.read_bytes(layout.run_file(run_dir, name))
             for name in (layout.RESULTS, layout.HISTORY) if storage.exists(layout.run_file(run_dir, name))}
    manifest_path = layout.run_file(run_dir, layout.MANIFEST)
    if storage.exists(manifest_path):
        manifest = json.loads(storage.read_bytes(manifest_path))
        for name, entry in manifest.items():
            if name not in files or hashlib.sha256(files[name]).hexdigest() != entry["sha256"]:
                raise ValueError(f"{layout.run_file(run_dir, name)} is not the file {manifest_path} lists (the "
                                 "last write of the results did not finish); run the sweep again with --resume "
                                 "to write them again")
    return files


def load_inputs(run_dir: str) -> RunInputs:
    """Read results.parquet (required), history.parquet, dataset_summary.json and config.json (all
    optional) from ``run_dir``, a local path or a URI. Raises FileNotFoundError without results."""
    files = read_committed(run_dir)
    if layout.RESULTS not in files:
        raise FileNotFoundError(f"no results.parquet in {run_dir}")
    results = pd.read_parquet(io.BytesIO(files[layout.RESULTS]))
    if "trial_id" not in results:
        results["trial_id"] = [f"row{i}" for i in range(len(results))]
    results["trial_id"] = results["trial_id"].astype(str)
    history = pd.read_parquet(io.BytesIO(files[layout.HISTORY])) if layout.HISTORY in files else pd.DataFrame()
    if "trial_id" in history:
        history["trial_id"] = history["trial_id"].astype(str)
    refused = keep_inside_run(results, run_dir)

    def read_json(name):
        file = layout.run_file(run_dir, name)
        return json.loads(storage.read_bytes(file)) if storage.exists(file) else None

    summary = read_json(layout.DATASET_SUMMARY)
    if summary and "datasets" in summary:  # a benchmark over several datasets: one entry each
        return RunInputs(run_dir, results, history, summary["datasets"][0], read_json(layout.CONFIG) or {},
                         {str(d.get("name")): d for d in summary["datasets"]}, refused)
    return RunInputs(run_dir, results, history, summary, read_json(layout.CONFIG) or {}, refused=refused)


RECORD_FILES = ("sample_grid", "per_sample", "memorization_grid", "augment_study",  # results columns naming a
                "augment_study_grid")  # record's files, relative to its run


def keep_inside_run(results: pd.DataFrame, run_dir: str) -> list[str]:
    """Blank (in place) every record file named in ``results`` that is not a relative path inside the run
    folder (an absolute path, a URI, or one that climbs out with ".."): the report embeds files of the run
    only, whoever wrote its results. Returns "column: path (run_dir)" for each one blanked."""
    refused = []

    def inside(column, value):
        if is_missing(value):
            return value
        text = str(value)
        normal = posixpath.normpath(text.replace("\\", "/"))
        if os.path.isabs(text) or "://" in text or normal == ".." or normal.startswith("../"):
            refused.append(f"{column}: {text} ({run_dir})")
            return None
        return value

    for column in RECORD_FILES:
        if column in results:
            results[column] = [inside(column, value) for value in results[column]]
    return refused


def merge_inputs(runs: list[RunInputs]) -> RunInputs:
    """Several runs as one: their results and histories stacked with a "run" column (each run's
    experiment name), sample grids and per-sample files addressed from each run's directory, trial ids prefixed with the run's
    number where two runs share one, each dataset's summary kept. One run is returned as it is."""
    if len(runs) == 1:
        return runs[0]
    ids = [set(run.results["trial_id"]) for run in runs]
    clash = any(a & b for i, a in enumerate(ids) for b in ids[i + 1:])
    results, histories, summaries = [], [], {}
    for i, run in enumerate(runs, 1):
        rows = run.results.assign(run=experiment_name(run))
        for column in RECORD_FILES:  # files of a record, relative to their run
            if column in rows:
                rows[column] = rows[column].map(lambda g, d=run.run_dir: g if is_missing(g) else layout.record_file(d, g))
        history = run.history.copy()
        if clash:
            rows["trial_id"] = f"{i}:" + rows["trial_id"]
            if "trial_id" in history:
                history["trial_id"] = f"{i}:" + history["trial_id"]
        results.append(rows)
        histories.append(history)
        for summary in run.summaries.values():
            summaries.setdefault(str(summary.get("name")), summary)
        if run.summary:
            summaries.setdefault(str(run.summary.get("name")), run.summary)
    names = list(dict.fromkeys(experiment_name(run) for run in runs))
    # .copy(): one block per dtype again (the stacked frames' columns would otherwise stay fragmented)
    return RunInputs(", ".join(run.run_dir for run in runs), pd.concat(results, ignore_index=True).copy(),
                     pd.concat(histories, ignore_index=True), None,
                     {**runs[0].config, "name": f"{len(runs)} runs: " + ", ".join(names)}, summaries,
                     [path for run in runs for path in run.refused])


def experiment_name(inputs: RunInputs) -> str:
    """config.json's "name", else the run directory's base name."""
    return str(inputs.config.get("name") or os.path.basename(inputs.run_dir.rstrip("/")) or inputs.run_dir)


def metric_columns(rows: pd.DataFrame) -> list[str]:
    """Names of the columns that measure something, in file order."""
    out = []
    for name in rows.columns:
        if name in ROW_COLUMNS or name.startswith(NON_METRIC_PREFIXES) or pd.api.types.is_bool_dtype(rows[name]):
            continue
        if pd.api.types.is_numeric_dtype(rows[name]) or rows[name].isna().all():
            out.append(name)
    return out


def spread_of(metric: str, columns) -> str | None:
    """The column holding the metric's std / stderr, if the results have one."""
    return next((metric + s for s in SPREAD_SUFFIXES if metric + s in columns), None)


def headline_metrics(metrics: list[str]) -> list[str]:
    """Metrics that get their own column: not per-class ("metric.class"), not a spread of another."""
    spreads = {m + s for m in metrics for s in SPREAD_SUFFIXES}
    return [m for m in metrics if "." not in m and m not in spreads]


def class_names(rows: pd.DataFrame, summary: dict | None) -> list[str]:
    """Class names in the dataset's order: dataset_summary.json's train counts, else the
    sample_accuracy.<class> columns."""
    counts = (summary or {}).get("counts") or {}
    first_split = counts.get("train") or next(iter(counts.values()), {})
    if first_split:
        return [str(name) for name in first_split]
    return [c.split(".", 1)[1] for c in rows.columns if c.startswith("sample_accuracy.")]


def objective(rows: pd.DataFrame, config: dict) -> Objective:
    """The metric and direction that rank trials: config.sweep.* columns, else config.json, else
    sample_accuracy / max."""
    sweep = config.get("sweep") or {}

    def first(column, fallback):
        values = rows[column].dropna() if column in rows else []
        return str(values.iloc[0]) if len(values) else fallback

    metric = first("config.sweep.metric", sweep.get("metric", "sample_accuracy"))
    mode = first("config.sweep.mode", sweep.get("mode", "max"))
    return Objective(metric, "min" if mode == "min" else "max")


def sort_best_first(rows: pd.DataFrame, obj: Objective) -> pd.DataFrame:
    """Rows ordered best first by the objective, NaN (and rows without it) last; stable."""
    if obj.metric not in rows:
        return rows
    key = pd.to_numeric(rows[obj.metric], errors="coerce")
    key = -key if obj.mode == "max" else key
    order = key.reset_index(drop=True).sort_values(na_position="last", kind="stable").index
    return rows.iloc[order]


def numeric_epoch(rows: pd.DataFrame) -> pd.Series:
    """The epoch column as floats (NaN where null or absent)."""
    if "epoch" not in rows:
        return pd.Series(math.nan, index=rows.index)
    return pd.to_numeric(rows["epoch"], errors="coerce")


def last_evaluations(rows: pd.DataFrame, obj: Objective) -> pd.DataFrame:
    """One row per trial, at its highest epoch (the best row there if several sampling settings were
    evaluated at it), ordered best first."""
    ranked = sort_best_first(rows, obj)
    epoch = numeric_epoch(ranked).reset_index(drop=True)
    ranked = ranked.iloc[epoch.sort_values(ascending=False, na_position="last", kind="stable").index]
    return sort_best_first(ranked.drop_duplicates("trial_id", keep="first"), obj)


def split_stages(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the trials' rows during the sweep: tracking and trial-final evaluations, the finalist stage's rows).
    Rows without a stage column are the sweep's."""
    finalist = rows.get("stage", pd.Series(None, index=rows.index)) == "finalist"
    return rows[~finalist], rows[finalist]


def rows_at_last_epoch(rows: pd.DataFrame) -> pd.DataFrame:
    """Every row at its trial's highest epoch (all sampling settings evaluated on that checkpoint); all
    of a trial's rows if none has an epoch."""
    epoch = numeric_epoch(rows)
    last = epoch.groupby(rows["trial_id"]).transform("max")
    return rows[(epoch == last) | last.isna()]


def best_row(last: pd.DataFrame, obj: Objective) -> pd.Series | None:
    """The best of the rows (by the objective, ignoring NaN), or None if none has a value."""
    if obj.metric not in last:
        return None
    scored = last[pd.to_numeric(last[obj.metric], errors="coerce").notna()]
    return sort_best_first(scored, obj).iloc[0] if len(scored) else None


SEED_COLUMN = "config.train.seed"  # the setting that tells seed twins apart


def aggregate_seeds(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of configurations that differ only by the training seed (config.train.seed; e.g. repeats of a
    point) folded into one: each metric the mean over the seeds, its spread column (x_std / x_stderr) the
    std over the seeds, ``seeds`` their number, trial_id the trials' ids; no per-sample file (a mean has no
    samples). Other rows are kept as they are, with seeds 1."""
    rows = rows.assign(seeds=1)
    if SEED_COLUMN not in rows or len(rows) < 2:
        return rows
    settings = [c for c in rows.columns if c.startswith("config.") and c != SEED_COLUMN and c != "config.sweep.space"]
    columns = ["method", *settings] if "method" in rows else settings
    key = rows[columns].apply(lambda column: column.map(str)).agg("|".join, axis=1)  # str: NaN, lists too
    metrics = [m for m in metric_columns(rows) if m != "seeds"]
    spread_columns = {m + suffix for m in metrics for suffix in SPREAD_SUFFIXES}
    out = []
    for _, group in rows.groupby(key, sort=False):
        if len(group) < 2 or group[SEED_COLUMN].nunique() < len(group):  # not one configuration's seeds
            out += [r for _, r in group.iterrows()]
            continue
        first = group.iloc[0].copy()
        for metric in (m for m in metrics if m not in spread_columns):
            values = pd.to_numeric(group[metric], errors="coerce").dropna()
            first[metric] = values.mean() if len(values) else math.nan
            first[spread_of(metric, rows.columns) or metric + "_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        first["seeds"] = len(group)
        first["trial_id"] = ", ".join(group["trial_id"].astype(str))
        first["per_sample"] = None
        out.append(first)
    return pd.DataFrame(out)


def swept_columns(rows: pd.DataFrame) -> list[str]:
    """config.* columns of the swept parameters: the keys of config.sweep.space (a JSON column, or
    flattened config.sweep.space.<path> columns); if none, the config columns that differ between trials."""
    keys = [k for text in rows.get("config.sweep.space", pd.Series(dtype=object)).dropna().unique()
            for k in json_dict(text)]
    keys += [c.removeprefix("config.sweep.space.") for c in rows.columns if c.startswith("config.sweep.space.")]
    columns = list(dict.fromkeys(f"config.{k}" for k in keys if f"config.{k}" in rows))
    if columns:
        return columns
    trials = rows.drop_duplicates("trial_id")
    return [c for c in rows.columns if c.startswith("config.") and not c.startswith("config.sweep.")
            and trials[c].astype(str).nunique() > 1]


def missing_reasons(rows: pd.DataFrame) -> dict[tuple[str, str], list[str]]:
    """{(metric, reason): [trial ids]} from the rows' "missing" JSON column."""
    out: dict[tuple[str, str], list[str]] = {}
    for trial, text in zip(rows["trial_id"], rows.get("missing", pd.Series([None] * len(rows)))):
        for metric, reason in json_dict(text).items():
            trials = out.setdefault((str(metric), str(reason)), [])
            if trial not in trials:
                trials.append(trial)
    return out
