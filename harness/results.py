"""results.parquet: one row per trial, evaluation and sampler setting, built from the evaluation records
(layout.record_dirs: each trial's tracking and trial-final evaluations; layout.finalist_records: the
finalist stage's, with its sampling sweep) and Tune's view of each trial (status, error, per-epoch losses).
Every row says its ``stage`` ("tracking", "trial_final" or "finalist"). Beside it, history.parquet holds
every epoch's training figures (for the curves)."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import io
import json
import math
import os
import platform
import subprocess
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from condgen_bench.harness.budgets import budget_id, budget_values
from condgen_bench.datasets.base import DatasetSpec
from condgen_bench.harness import resume as resumes
from condgen_bench.harness.config import config_hash, experiment_from_dict, flatten, from_dict
from condgen_bench.models import get_method
from condgen_bench.models.accel import peak_tflops
from condgen_bench.models.flops import training_flops_per_image
from condgen_bench.reports.run_folder import layout, storage
from condgen_bench.reports.run_folder.records import EvalRecord, record_files

# a restart record's fields that the restarts column leaves out: the trial (the row's own), where the copy
# lay, its number (its place in the list), when, and the log's line
RESTART_BOOKKEEPING = ("trial", "checkpoint", "number", "time", "why")


def versions() -> dict[str, str]:
    import numpy
    import ray
    import torch

    # torch-fidelity's version read from its metadata: importing it costs 1.7 s (harness/evaluation/extractors.py)
    return {"python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
            "torch_fidelity": importlib.metadata.version("torch-fidelity"), "numpy": numpy.__version__, "pandas": pd.__version__,
            "platform": platform.platform()}


def git_commit() -> str:
    """The commit of this checkout ("+dirty" if it has uncommitted changes), or "unknown"."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def code_version() -> str:
    """What made a run's files: the checkout's commit (git_commit), or where there is no checkout (an
    installed package) "condgen-bench <its version>", or "unknown"."""
    commit = git_commit()
    if commit != "unknown":
        return commit
    try:
        return f"condgen-bench {importlib.metadata.version('condgen-bench')}"
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def reported_epoch(result, last_epoch: int | None) -> int | None:
    """The last epoch the trial's scheduler saw (Tune's last result; ``result``: ray.tune.Result), at most
    ``last_epoch`` (the last the worker trained). A scheduler's stop reaches the worker a moment after its
    decision: a tiny epoch can be trained, its history written and even its record scored before that (the
    record is kept, as measured), but it was never reported, so it does not make a stopped trial complete. ``last_epoch`` where Tune kept no epoch."""
    metrics = getattr(result, "metrics", None) or {}
    epoch = metrics.get("epoch")
    if epoch is None or last_epoch is None or isinstance(epoch, float) and math.isnan(epoch):
        return last_epoch
    return min(int(epoch), last_epoch)


def _trial_status(result, last_epoch: int | None, planned_epochs: int, diverged: dict | None) -> tuple[str, str]:
    """(status, reason): "error", "diverged" (with the worker's reason and epoch), "no_result",
    "stopped_early" (by the scheduler) or "completed". ``last_epoch``: the last epoch trained."""
    if diverged is not None:
        return "diverged", f"epoch {diverged['epoch']} (step {diverged['step']}): {diverged['reason']}"
    if result.error is not None:
        return "error", str(result.error).strip().splitlines()[-1][:500] if str(result.error).strip() else repr(result.error)
    if last_epoch is None:
        return "no_result", "the trial reported nothing"
    seen = reported_epoch(result, last_epoch)
    if seen < planned_epochs:
        unreported = (f"; epoch {last_epoch} had trained but was stopped before it was reported"
                      if last_epoch > seen else "")
        return "stopped_early", f"stopped by the scheduler after epoch {seen} of {planned_epochs}{unreported}"
    return "completed", ""


@functools.lru_cache(maxsize=64)
def _gflops_per_image(method: str, model_json: str, spec: DatasetSpec, batch_size: int) -> tuple[float, str]:
    """Training GFLOPs per image of one network (models/flops.py: counted on a meta-device copy), once per
    distinct network in this process, and "" ; or NaN and why it could not be counted (a network that does
    not run on ``meta``): a missing figure, not a lost run."""
    model = from_dict(get_method(method).config_cls, json.loads(model_json), "model.")
    try:
        return training_flops_per_image(method, model, spec, batch_size) / 1e9, ""
    except Exception as error:  # noqa: BLE001 - any failure of the count; the figure says why it is missing
        return math.nan, f"training FLOPs could not be counted on a meta-device copy: {type(error).__name__}: {error}"


def hardware_use(progress: pd.DataFrame | None, gflops: float, workers: int = 1) -> pd.DataFrame | None:
    """Per epoch of ``progress`` (training_progress): the achieved training TFLOP/s (gflops per image x images
    per second) and, on a device whose dense bf16 peak is known (models/accel.py PEAK_TFLOPS), its share
    of that peak (NaN elsewhere, a CPU say); and the epoch's portable costs: the images it trained on (the
    worker's count of steps x batch x ranks, else images per second x seconds), their FLOPs (gflops per
    image each) and its device-seconds (seconds x the ranks: the epoch's "cluster" record's
    workers_per_trial, else ``workers``). Returns progress with the columns train_tflops,
    train_peak_fraction, images, flops and device_seconds added (None for None)."""
    if progress is None or "images_per_second" not in progress:
        return progress
    progress = progress.copy()
    rate = pd.to_numeric(progress["images_per_second"], errors="coerce")
    progress["train_tflops"] = rate * gflops / 1000
    devices = progress["device"] if "device" in progress else pd.Series("", index=progress.index)
    peaks = devices.map(lambda name: peak_tflops(name, "bf16") if isinstance(name, str) else None)
    progress["train_peak_fraction"] = progress["train_tflops"] / pd.to_numeric(peaks, errors="coerce")
    seconds = pd.to_numeric(progress.get("train_seconds", pd.Series(math.nan, index=progress.index)), errors="coerce")
    clusters = progress.get("cluster", pd.Series(None, index=progress.index))
    ranks = clusters.map(lambda c: c.get("workers_per_trial", workers) if isinstance(c, dict) else workers)
    progress["images"] = rate * seconds
    if "train_images_seen" in progress:  # the worker's count (steps x batch x ranks), where it reported one
        seen = pd.to_numeric(progress["train_images_seen"], errors="coerce")
        counted = seen.diff().fillna(seen)
        progress["images"] = counted.where(counted.notna(), progress["images"])
    progress["flops"] = progress["images"] * gflops * 1e9
    progress["device_seconds"] = seconds * ranks
    return progress


def training_costs(progress: pd.DataFrame) -> pd.DataFrame:
    """The portable training costs up to each epoch of hardware_use's ``progress``, indexed by epoch:
    images_seen, flops (both the same on any machine) and device_seconds (this machine's), summed, and
    device_seconds_by_kind, {device kind: device-seconds} as JSON."""
    by_epoch = progress.set_index("epoch")
    totals = by_epoch[["images", "flops", "device_seconds"]].apply(pd.to_numeric, errors="coerce").cumsum()
    totals = totals.rename(columns={"images": "images_seen"})
    kinds = by_epoch.get("device", pd.Series("unknown", index=by_epoch.index)).fillna("unknown").astype(str)
    running, by_kind = {}, []
    for kind, seconds in zip(kinds, pd.to_numeric(by_epoch["device_seconds"], errors="coerce")):
        if seconds == seconds:
            running[kind] = running.get(kind, 0.0) + float(seconds)
        by_kind.append(json.dumps({k: round(v, 3) for k, v in running.items()}, sort_keys=True))
    totals["device_seconds_by_kind"] = by_kind
    return totals


def _record_row(base_at, run_dir: str, relative: str, train_seconds, rates=None) -> dict:
    """One results row: the trial's columns at the record's epoch (``base_at(epoch)``), then the record at
    ``relative`` (a folder under run_dir). ``rates``: training figures by epoch (the means up to it: images/s,
    TFLOP/s, share of the peak)."""
    record = EvalRecord.read(layout.record_file(run_dir, relative), arrays=False).fields
    base = base_at(record["epoch"])
    if record.get("config_hash", base["config_hash"]) != base["config_hash"]:
        raise ValueError(f"{relative}: evaluated under config {record['config_hash']}, but trial "
                         f"{base['trial_id']} has config {base['config_hash']}")
    row = dict(base)
    settings = record["protocol"].get("sampling", {})
    row.update(stage=record.get("stage"), sampling_setting=record.get("sampling_setting", "default"),
               epoch=record["epoch"], step=record["step"])
    # each setting the method's sampler used, one column each ("sampling.steps"; the method's sampler_axes)
    row.update({f"sampling.{k}": v for k, v in settings.items()})
    if "finalist_rank" in record:
        row["finalist_rank"] = record["finalist_rank"]
    if "selection_rule" in record:  # the epoch a finalist was scored at, and why that one (harness/best.py)
        row.update(selected_epoch=record["epoch"], selection_rule=record["selection_rule"])
    row["train_seconds"] = float(train_seconds.get(record["epoch"], math.nan)) if train_seconds is not None else math.nan
    if rates is not None and record["epoch"] in rates.index:
        row.update({f"train_{key}" if not key.startswith("train_") else key:
                    value if isinstance(value, str) else float(value)  # device_seconds_by_kind: JSON text
                    for key, value in rates.loc[record["epoch"]].items()})
    row.update(record["metrics"])
    row["git_commit"] = record.get("code_version") or row.get("git_commit")  # the code that evaluated it
    row["missing"] = json.dumps(record["missing"])
    row.update({f"protocol.{k}": (json.dumps(v) if isinstance(v, (dict, list)) else v)
                for k, v in record["protocol"].items()})
    row.update(record_files(run_dir, relative))
    return row


def training_progress(run_dir: str, trial_id: str, reported: pd.DataFrame | None) -> pd.DataFrame | None:
    """One row per training epoch of a trial, each epoch once: the worker's per-epoch records (which
    survive a restart), else what the trial reported to Tune (after a restored run, only the epochs since
    the restore). The last record of an epoch wins when a restart replayed it."""
    records = [json.loads(storage.read_bytes(path)) for path in layout.history_files(run_dir, trial_id)]
    frame = pd.DataFrame(records) if records else reported
    if frame is None or "epoch" not in frame:
        return frame
    return frame.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


@dataclass
class Collected:
    """The rows of a finished Tune run, read once (collect_results): each trial's rows in order, its finalist
    records read when asked for (the finalist stage writes them after the trials' rows chose the finalists)."""

    # per trial (and budget read off one): (rows before its finalist records, () -> its finalist rows, rows after)
    trials: list[tuple[list[dict], Callable[[], list[dict]], list[dict]]]
    history: list[dict]
    classifier_real_accuracy: float

    def frames(self, finalists: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(results rows, history rows); the finalist records as they are now where ``finalists``."""
        rows = [row for before, finalist_rows, after in self.trials
                for row in before + (finalist_rows() if finalists else []) + after]
        frame = pd.DataFrame(rows)
        frame["classifier_real_accuracy"] = self.classifier_real_accuracy
        return frame, pd.DataFrame(self.history)


def collect_results(grid, run_dir: str, data, reference) -> Collected:
    """Rows for every trial of a finished Tune run, with its finalist records where it has them; a trial
    that smaller epoch budgets were read off (train.budgets, harness/budgets.py) also gives each budget's
    rows, as the trial "<trial id>@<budget>". grid: ray.tune.ResultGrid."""
    common = {"dataset": data.name, "dataset_fingerprint": data.fingerprint, "git_commit": git_commit(),
              **{f"version.{k}": v for k, v in versions().items()}}
    trials, history = [], []
    for result in grid:
        trial_id = os.path.basename(result.path).removeprefix("trial_")
        progress = training_progress(run_dir, trial_id, result.metrics_dataframe)
        diverged_path = layout.diverged_file(run_dir, trial_id)
        diverged = json.loads(storage.read_bytes(diverged_path)) if storage.exists(diverged_path) else None
        trial = TrialOutcome(trial_id, result, progress, diverged)
        for budget in [*experiment_from_dict(result.config).train.budgets, None]:  # None: the trial's own
            view, values = (trial, result.config) if budget is None else (trial.up_to(budget),
                                                                          budget_values(result.config, budget))
            *rows, trial_history = _trial_parts(run_dir, view, values, common, data.spec())
            trials.append(tuple(rows))
            history += trial_history
    return Collected(trials, history, reference.classifier_accuracy)


@dataclass(frozen=True)
class TrialOutcome:
    """What Tune and the worker left of one trial, per epoch; or (``up_to``) the same records read as a
    smaller epoch budget of it."""
    trial_id: str  # the Tune trial, whose folders these are
    result: object  # ray.tune.Result
    progress: pd.DataFrame | None  # training_progress: one row per epoch
    diverged: dict | None  # diverged.json, None if it did not diverge
    budget: int | None = None  # a smaller budget read off the trial (harness/budgets.py): its last epoch

    @property
    def row_id(self) -> str:
        """The trial id its rows carry: the trial's, or "<trial id>@<budget>"."""
        return self.trial_id if self.budget is None else budget_id(self.trial_id, self.budget)

    def up_to(self, budget: int) -> TrialOutcome:
        """The trial read as a ``budget``-epoch trial: its epochs up to the budget, and its divergence only if
        it came by then (after it, the budget itself finished)."""
        progress = self.progress
        if progress is not None and "epoch" in progress:
            progress = progress[progress["epoch"] <= budget]
        diverged = self.diverged if self.diverged is None or self.diverged["epoch"] <= budget else None
        return TrialOutcome(self.trial_id, self.result, progress, diverged, budget)

    def record_dirs(self, run_dir: str) -> list[str]:
        """Its evaluation record folders (layout.record_dirs), those of its epochs only."""
        return [r for r in layout.record_dirs(run_dir, self.trial_id)
                if self.budget is None or layout.record_epoch(r) <= self.budget]

    def status(self, last_epoch: int | None, planned_epochs: int) -> tuple[str, str]:
        """(status, reason): _trial_status's, but a budget the trial trained past completed (what came after
        its last epoch is the longer budget's)."""
        if (self.budget is not None and last_epoch is not None and self.diverged is None
                and reported_epoch(self.result, last_epoch) >= self.budget):
            return "completed", ""
        return _trial_status(self.result, last_epoch, planned_epochs, self.diverged)


def _trial_rows(run_dir: str, trial: TrialOutcome, config_values: dict, common: dict,
                spec: DatasetSpec) -> tuple[list[dict], list[dict]]:
    """_trial_parts' rows all at once, and its history rows."""
    before, finalist_rows, after, history = _trial_parts(run_dir, trial, config_values, common, spec)
    return before + finalist_rows() + after, history


def _trial_parts(run_dir: str, trial: TrialOutcome, config_values: dict, common: dict,
                 spec: DatasetSpec) -> tuple[list[dict], Callable[[], list[dict]], list[dict], list[dict]]:
    """The results rows and history rows of a trial (or of a smaller budget read off it: TrialOutcome.up_to,
    its finalist records its own, budget_of the trial) run under ``config_values`` (its resolved config).
    Rows and history carry the hardware use: training GFLOPs per image (counted for the trial's network on
    ``spec``'s images), achieved TFLOP/s and, on a GPU of known peak, its share. Returns (its rows before
    its finalist records, () -> its finalist rows as the run folder holds them then, its rows after them,
    its history rows)."""
    changes = resumes.trial_changes(run_dir, trial.trial_id)  # what resumes changed, from which epoch
    config_values, _ = resumes.with_last_restart(config_values, run_dir, trial.trial_id)  # the record wins
    first_values, config_values = config_values, resumes.values_at(config_values, changes, None)
    experiment = experiment_from_dict(config_values)
    gflops, uncounted = _gflops_per_image(experiment.method, json.dumps(config_values["model"], sort_keys=True),
                                          spec, experiment.train.batch_size)
    row_id, diverged = trial.row_id, trial.diverged
    progress = hardware_use(trial.progress, gflops, experiment.cluster.workers_per_trial)
    history, last_epoch = [], None
    if progress is not None and "epoch" in progress and len(progress):
        last_epoch = int(progress["epoch"].max())
        columns = ["loss", "train_seconds", "images_per_second", "device", "train_tflops", "train_peak_fraction",
                   *(c for c in progress.columns if c.startswith("train/"))]
        for _, r in progress.iterrows():
            history.append({"trial_id": row_id, "epoch": int(r["epoch"]), **{c: r.get(c) for c in columns}})
    status, reason = trial.status(last_epoch, experiment.train.epochs)
    # the precision the worker resolved ("auto" becomes bf16 or fp32 by device); the config's where it never reported
    reported = (progress["train_precision"].dropna() if progress is not None and "train_precision" in progress
                else pd.Series(dtype=object))
    base = {"trial_id": row_id, "method": experiment.method, "status": status, "status_reason": reason, **common,
            "protocol.train_precision": reported.iloc[-1] if len(reported) else experiment.train.precision}
    if trial.budget is not None:
        base["budget_of"] = trial.trial_id
    if changes:
        base["config_changes"] = json.dumps([{"setting": p, "old": v[0], "new": v[1], "from_epoch": r["from_epoch"]}
                                             for r in changes for p, v in r["values"].items()])
    ran_under = (progress.set_index("epoch")["cluster"].dropna().to_dict()
                 if progress is not None and "cluster" in progress else {})

    def base_at(epoch: int | None) -> dict:
        """base with the config an evaluation at ``epoch`` ran under: the changes made by then, the cluster
        settings of the driver that ran that epoch (Tune's saved ones where the history has none)."""
        values = resumes.values_at(first_values, changes, epoch)
        values["cluster"] = ran_under.get(epoch) or values["cluster"]
        shown = json.loads(json.dumps(values))
        shown["sweep"]["space"] = json.dumps(shown["sweep"]["space"])  # one column, not one per swept path
        return {**base, "config_hash": config_hash(values),
                **{f"config.{k}": (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in flatten(shown).items()}}

    restarts = [json.loads(storage.read_bytes(path)) for path in layout.restart_records(run_dir, trial.trial_id)]
    if restarts:  # the scheduler's restarts of the trial (layout.restart_record), less the run folder's bookkeeping
        base["restarts"] = json.dumps([{k: v for k, v in r.items() if k not in RESTART_BOOKKEEPING} for r in restarts])
    base["train_gflops_per_image"] = gflops
    train_seconds = (progress.set_index("epoch")["train_seconds"].cumsum()
                     if progress is not None and "train_seconds" in progress else None)
    rates = None
    if progress is not None and "images_per_second" in progress:  # means over the epochs up to each one
        rates = (progress.set_index("epoch")[["images_per_second", "train_tflops", "train_peak_fraction"]]
                 .apply(pd.to_numeric, errors="coerce").expanding().mean())
        rates = rates.join(training_costs(progress))  # and the sums up to it
    records = trial.record_dirs(run_dir)
    base = base_at(last_epoch)  # the rows without a record: the trial's last epoch's config

    def record_rows(relatives: list[str]) -> list[dict]:
        rows = [_record_row(base_at, run_dir, relative, train_seconds, rates) for relative in relatives]
        if uncounted:  # the hardware figures that rest on the count, missing with the reason
            for row in rows:
                row["missing"] = json.dumps({**json.loads(row["missing"]), "train_gflops_per_image": uncounted,
                                             "train_tflops": uncounted, "train_peak_fraction": uncounted,
                                             "train_flops": uncounted})
        return rows

    def finalist_rows() -> list[dict]:
        """The trial's finalist records, or the row saying why its scoring failed ([] if not a finalist)."""
        rows = record_rows(layout.finalist_records(run_dir, row_id))
        failed = layout.finalist_failed_file(run_dir, row_id)
        if not rows and storage.exists(failed):
            error = json.loads(storage.read_bytes(failed))["error"]
            rows.append({**base, "stage": "finalist", "epoch": last_epoch,
                         "missing": json.dumps({"all": f"finalist scoring failed: {error}"})})
        return rows

    after = []
    if diverged is not None:  # the point where it diverged: its epoch and reason, no metrics
        after.append({**base, "epoch": diverged["epoch"], "step": diverged["step"],
                      "missing": json.dumps({"all": f"diverged: {diverged['reason']}"})})
    elif not records:
        after.append({**base, "epoch": last_epoch, "missing": json.dumps({"all": reason or "no evaluation ran"})})
    return record_rows(records), finalist_rows, after, history


def text_where_mixed(frame: pd.DataFrame) -> pd.DataFrame:
    """A column whose values mix text and numbers (a protocol entry one family records as a count and
    another as a sentence, e.g. protocol.bpd_t_samples) as text, so that Parquet can store it."""
    for column in frame.columns:
        values = frame[column].dropna()
        if frame[column].dtype == object and values.map(lambda v: isinstance(v, str)).any() \
                and not values.map(lambda v: isinstance(v, str)).all():
            frame[column] = frame[column].map(lambda v: v if v is None or (isinstance(v, float) and math.isnan(v))
                                              else str(v))
    return frame


def write_results(frame: pd.DataFrame, history: pd.DataFrame, run_dir: str) -> str:
    """Write results.parquet and history.parquet together (storage.write_files: a full disk leaves both
    old files) and, last, results_manifest.json with their digests: a reader (reports.inputs.read_committed)
    can tell a finished write of the two from one that a crash cut between them. Returns the results path."""
    files, manifest = {}, {}
    for name, table in ((layout.RESULTS, text_where_mixed(frame.copy())), (layout.HISTORY, history)):
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        data = files[layout.run_file(run_dir, name)] = buffer.getvalue()
        manifest[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "rows": len(table)}
    storage.write_files(files)  # both or neither, where the storage allows
    storage.write_bytes(layout.run_file(run_dir, layout.MANIFEST), json.dumps(manifest, indent=1).encode())
    return layout.run_file(run_dir, layout.RESULTS)
