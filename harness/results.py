"""results.parquet: one row per trial, evaluation point and sampler setting, built from the evaluation
records the trials wrote (artifacts/<trial>/epoch_NNNN/eval.json, and for the final checkpoint's
sampling sweep epoch_NNNN/sampling/<setting>/eval.json) and Tune's view of each trial (status,
error, per-epoch losses). Beside it, history.parquet holds every epoch's training figures (for the curves)."""

from __future__ import annotations

import io
import json
import math
import os
import platform
import subprocess

import pandas as pd

from harness import storage
from harness.config import config_hash, experiment_from_dict, flatten
from harness.worker import DIVERGED_FILE


def versions() -> dict[str, str]:
    import numpy
    import ray
    import torch
    import torch_fidelity

    return {"python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
            "torch_fidelity": torch_fidelity.__version__, "numpy": numpy.__version__, "pandas": pd.__version__,
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


def _trial_status(result, last_epoch: int | None, planned_epochs: int, diverged: dict | None) -> tuple[str, str]:
    """(status, reason): "error", "diverged" (with the worker's reason and epoch), "no_result",
    "stopped_early" (by the scheduler) or "completed"."""
    if diverged is not None:
        return "diverged", f"epoch {diverged['epoch']} (step {diverged['step']}): {diverged['reason']}"
    if result.error is not None:
        return "error", str(result.error).strip().splitlines()[-1][:500] if str(result.error).strip() else repr(result.error)
    if last_epoch is None:
        return "no_result", "the trial reported nothing"
    if last_epoch < planned_epochs:
        return "stopped_early", f"stopped by the scheduler after epoch {last_epoch} of {planned_epochs}"
    return "completed", ""


def collect_results(grid, run_dir: str, data, reference) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows for every trial of a finished Tune run. grid: ray.tune.ResultGrid."""
    common = {"dataset": data.name, "dataset_fingerprint": data.fingerprint, "git_commit": git_commit(),
              **{f"version.{k}": v for k, v in versions().items()}}
    rows, history = [], []
    for result in grid:
        trial_id = os.path.basename(result.path).removeprefix("trial_")
        experiment = experiment_from_dict(result.config)
        values = json.loads(json.dumps(result.config))
        values["sweep"]["space"] = json.dumps(values["sweep"]["space"])  # one column, not one per swept path
        config_cols = {f"config.{k}": (json.dumps(v) if isinstance(v, (list, dict)) else v)
                       for k, v in flatten(values).items()}
        progress = result.metrics_dataframe  # every report of the trial
        last_epoch = None
        if progress is not None and "epoch" in progress:
            last_epoch = int(progress["epoch"].max())
            columns = ["loss", "train_seconds", "images_per_second",
                       *(c for c in progress.columns if c.startswith("train/"))]
            for _, r in progress.iterrows():
                history.append({"trial_id": trial_id, "epoch": int(r["epoch"]), **{c: r.get(c) for c in columns}})
        artifact_dir = storage.join(run_dir, "artifacts", trial_id)
        diverged_path = storage.join(artifact_dir, DIVERGED_FILE)
        diverged = json.loads(storage.read_bytes(diverged_path)) if storage.exists(diverged_path) else None
        status, reason = _trial_status(result, last_epoch, experiment.train.epochs, diverged)
        base = {"trial_id": trial_id, "method": experiment.method, "config_hash": config_hash(result.config),
                "status": status, "status_reason": reason, **common, **config_cols}
        train_seconds = (progress.set_index("epoch")["train_seconds"].cumsum()
                         if progress is not None and "train_seconds" in progress else None)
        evaluations = [name for name in storage.list_dir(artifact_dir) if name.startswith("epoch_")]
        records = [os.path.join(name, sub) for name in evaluations
                   for sub in ["", *(os.path.join("sampling", key)
                                     for key in storage.list_dir(storage.join(artifact_dir, name, "sampling")))]]
        for name in records:
            name = name.rstrip("/")
            record = json.loads(storage.read_bytes(storage.join(artifact_dir, name, "eval.json")))
            row = dict(base)
            settings = record["protocol"].get("sampling", {})
            row.update(sampling_setting=record.get("sampling_setting", "default"), sampler=settings.get("sampler"),
                       sampling_steps=settings.get("steps"), eta=settings.get("eta"), guidance=settings.get("guidance"))
            row.update(epoch=record["epoch"], step=record["step"])
            row["train_seconds"] = float(train_seconds.get(record["epoch"], math.nan)) if train_seconds is not None else math.nan
            row.update(record["metrics"])
            row["missing"] = json.dumps(record["missing"])
            row.update({f"protocol.{k}": (json.dumps(v) if isinstance(v, dict) else v)
                        for k, v in record["protocol"].items()})
            row["sample_grid"] = os.path.join("artifacts", trial_id, name, "samples.png")
            rows.append(row)
        if diverged is not None:  # the point where it diverged: its epoch and reason, no metrics
            rows.append({**base, "epoch": diverged["epoch"], "step": diverged["step"],
                         "missing": json.dumps({"all": f"diverged: {diverged['reason']}"})})
        elif not evaluations:
            rows.append({**base, "epoch": last_epoch, "missing": json.dumps({"all": reason or "no evaluation ran"})})
    frame = pd.DataFrame(rows)
    frame["classifier_real_accuracy"] = reference.classifier_accuracy
    return frame, pd.DataFrame(history)


def write_results(frame: pd.DataFrame, history: pd.DataFrame, run_dir: str) -> str:
    """Write results.parquet and history.parquet into the run directory; returns the results path."""
    path = storage.join(run_dir, "results.parquet")
    for name, table in (("results.parquet", frame), ("history.parquet", history)):
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        storage.write_bytes(storage.join(run_dir, name), buffer.getvalue())
    return path
