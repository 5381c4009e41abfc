"""The finalist stage: after Tune has finished, the best trials of each experiment are re-loaded from their
best evaluated checkpoints (harness/best.py; the last where none is kept) and scored with the full
evaluation suite (harness/evaluation/plan.py, stage "finalist").

One Ray task per finalist, each asking for a training worker's resources (a GPU where the trials had
one), so that finalists run concurrently where the cluster allows. A finalist's record is written last
(after its sampling-sweep records), so a finalist whose eval.json exists is whole and is not scored
again after --resume.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import pandas as pd
import ray
import torch

from condgen_bench.harness.best import best_of
from condgen_bench.harness.budgets import budget_values, split_budget_id
from condgen_bench.harness.front import ELIGIBLE, best_epoch_rows, evaluated_rows, front_rows, spread
from condgen_bench.harness.config import ExperimentConfig, config_hash, experiment_from_dict
from condgen_bench.harness.evaluation.downstream import classifier_hits
from condgen_bench.harness.evaluation.scoring import Scores, evaluate, sampling_grid, setting_key
from condgen_bench.harness.evaluation.plan import Capabilities, EvalPlan, finalist_plan
from condgen_bench.harness.trial import TrialInputs, task_options
from condgen_bench.models import build_method
from condgen_bench.models.accel import on_host, task_device
from condgen_bench.reports.run_folder import layout, storage
from condgen_bench.reports.run_folder.checkpoint import TrialCheckpoint, newest_readable, trial_checkpoints
from condgen_bench.reports.run_folder.records import EvalRecord



@dataclass(frozen=True)
class Finalist:
    experiment: str  # the experiment's name
    trial_id: str
    rank: int  # 1 = the experiment's best trial by the sweep metric (with sweep.objectives: the front's first)
    value: float  # its sweep metric at its best evaluated epoch (at its last where eval.keep_best is 0)


def select_finalists(frame: pd.DataFrame, history: pd.DataFrame, config: ExperimentConfig) -> list[Finalist]:
    """The best ``config.eval.finalists`` trials of one experiment (rows and history from
    harness/results.py), each ranked by the sweep metric at its best evaluated epoch under its own sampler
    (the epoch its finalist is scored at: harness/best.py; at its last evaluation where eval.keep_best is 0,
    and, for a training statistic such as "loss", at its last epoch); with sweep.objectives, the trials of
    the objectives' front spread along it (harness/front.py). Trials that diverged, failed or reported
    nothing are left out, and so are trials without a value of the metric."""
    metric, k = config.sweep.metric, config.eval.finalists
    if k == 0 or frame.empty:
        return []
    if metric in frame:
        rows = evaluated_rows(frame, metric)
    elif metric in history:
        eligible = set(frame.loc[frame["status"].isin(ELIGIBLE), "trial_id"])
        rows = history[history["trial_id"].isin(eligible) & pd.to_numeric(history[metric], errors="coerce").notna()]
    else:
        return []
    if config.sweep.objectives and metric in frame:
        chosen = spread(front_rows(frame, config), k)
    else:
        if config.eval.keep_best > 0 and metric in frame:  # each trial at its best evaluated epoch (best.py)
            each = best_epoch_rows(rows, metric, config.sweep.mode)
        else:
            each = rows.sort_values("epoch").drop_duplicates("trial_id", keep="last")
        # ties broken by trial id, so that a resumed run picks the same finalists
        chosen = each.sort_values([metric, "trial_id"], ascending=[config.sweep.mode == "min", True]).head(k)
    return [Finalist(config.name, row["trial_id"], i + 1, float(row[metric]))
            for i, (_, row) in enumerate(chosen.iterrows())]


def is_scored(run_dir: str, trial_id: str) -> bool:
    """True when the finalist's record is whole (its own eval.json is written last)."""
    return EvalRecord.exists(layout.finalist_dir(run_dir, trial_id))


def bound_of(record: dict) -> Scores:
    """The bits/dim part of an evaluation record (evaluate's, with its per-sample arrays), as
    likelihood_metrics returns it: the bound does not depend on the samples, so other records of the
    checkpoint reuse it."""
    return Scores(record.get("metrics", {}), record.get("missing", {}), record.get("protocol", {}),
                  record.get("per_sample", {})).starting("bpd")


def _trial_final_bound(run_dir: str, trial_id: str, epoch: int) -> Scores | None:
    """The bound computed on the same checkpoint at its trial-final evaluation (where the plan says to take
    it: plan.finalist_plan), or None where that record holds none on the test split."""
    folder = layout.epoch_dir(run_dir, trial_id, epoch)
    if not EvalRecord.exists(folder):
        return None
    saved = EvalRecord.read(folder)
    record = saved.fields
    if record.get("stage") != "trial_final" or math.isnan(record["metrics"].get("bpd", math.nan)):
        return None
    # "test (the dataset has no validation split)": the trial stages' bound is on test only without validation
    if not record["protocol"].get("bpd_split", "test").startswith("test"):
        return None
    return bound_of({**record, "per_sample": saved.per_sample})


class ClassifiersAsRayTasks:
    """The classifiers of a finalist's augmentation study (downstream.run_jobs's runner) as Ray tasks of one
    CPU and one thread each, as many at once as the cluster's free CPUs allow: the scoring, blocked in
    ray.get, lends Ray its own CPUs meanwhile. The test split goes to the object store once a call. On 2
    cores, two one-thread tasks at once are 1.3x one 2-thread process."""

    description = "Ray tasks of 1 CPU each"  # the study's protocol entry

    def __call__(self, jobs: list[tuple], test_x: torch.Tensor, test_y: torch.Tensor, num_classes: int) -> list:
        """jobs: (name, x [N, C, H, W] uint8, y [N], recipes) -> each job's hits [len(recipes), T] bool, in
        order; each task is named by its job."""
        remote = ray.remote(num_cpus=1)(classifier_hits)
        test_x_ref, test_y_ref = ray.put(test_x), ray.put(test_y)
        return ray.get([remote.options(name=name).remote(x, y, test_x_ref, test_y_ref, num_classes, recipes, "cpu", 1)
                        for name, x, y, recipes in jobs])


def classifier_runner(config: ExperimentConfig, device) -> ClassifiersAsRayTasks | None:
    """Ray tasks for the scoring's classifiers where eval.classifier_tasks is on, Ray is up and the scoring
    runs on the CPU (a GPU held by the scoring cannot be lent to tasks of its own: there they train one
    after another on it); None otherwise (in the scoring process)."""
    return ClassifiersAsRayTasks() if config.eval.classifier_tasks and on_host(device) and ray.is_initialized() else None


def finalist_checkpoint(run_dir: str, trial_id: str) -> tuple[TrialCheckpoint, dict, str]:
    """The checkpoint a finalist is scored at, its state, and why that one: the trial's best kept evaluated
    epoch (harness/best.py), or for a budget read off a trial ("<trial>@<budget>") the best at or before the
    budget; where none is kept (eval.keep_best 0, an older run), the trial's newest readable checkpoint or
    the budget's last epoch. Raises FileNotFoundError naming the folder where there is none."""
    trial, budget = split_budget_id(trial_id)
    found = best_of(run_dir, trial, budget)
    if found is not None:
        _, folder, rule = found
        checkpoint = TrialCheckpoint(folder)
        return checkpoint, checkpoint.load(), rule
    if budget is None:  # the readable checkpoint furthest on, by the epoch and step saved in it
        newest = newest_readable(trial_checkpoints(run_dir, trial_id))
        if newest is None:
            raise FileNotFoundError(f"trial {trial_id} has no readable checkpoint under {layout.train_storage(run_dir)}")
        return (*newest, "the last epoch (no best evaluated checkpoint kept)")
    checkpoint = TrialCheckpoint(layout.budget_checkpoint(run_dir, trial, budget))
    if not checkpoint.exists():
        raise FileNotFoundError(f"budget {budget} of trial {trial} has no checkpoint at {checkpoint.folder}")
    return checkpoint, checkpoint.load(), f"the budget's last epoch, {budget} (no best evaluated checkpoint kept)"


def score_finalist(trial_id: str, rank: int, run_dir: str, data, reference, threads: int,
                   device: str | None = None) -> dict:
    """Score one finalist (a Ray task on a cluster; ``device`` None: its GPU where it has one): load the
    checkpoint finalist_checkpoint picks (its best evaluated epoch), rebuild the method from the trial's own
    config saved in it, evaluate it under the finalist plan, once per sampling-sweep setting and then under its own
    sampler, writing each record under finalists/<trial_id>/. Returns a one-line summary {"trial_id",
    "epoch", "seconds"}."""
    t0 = time.time()
    torch.set_num_threads(threads)
    device = device or task_device(len(ray.get_gpu_ids()))  # a task: its GPU, where Ray gave it one
    checkpoint, state, rule = finalist_checkpoint(run_dir, trial_id)
    trial, budget = split_budget_id(trial_id)
    # the trial's point of the search space (as the budget-epoch trial it stands for)
    values = state["config"] if budget is None else budget_values(state["config"], budget)
    config = experiment_from_dict(values)
    method = build_method(config.method, config.model, data.spec(), device=device, seed=config.train.seed)
    method.load_state_dict(state["method"])
    epoch = state["epoch"]
    plan = finalist_plan(config, Capabilities.of(method, reference, data))
    bound = _trial_final_bound(run_dir, trial, epoch) if plan.bpd_from == "trial_final" else None
    folder = layout.finalist_dir(run_dir, trial_id)
    runner = classifier_runner(config, device)
    extra = {"epoch": epoch, "step": method.step, "trial_id": trial_id, "finalist_rank": rank,
             "checkpoint": checkpoint.folder, "config_hash": config_hash(values), "selection_rule": rule}

    def score(plan: EvalPlan, likelihood):
        record, grid = evaluate(method, data, reference, config.eval, plan, device=device, likelihood=likelihood,
                                runner=runner)
        record.update(extra, sampling_setting=setting_key(plan.settings))
        # the trial's training precision (checkpoints from before it was saved: every step ran in fp32)
        record["protocol"]["train_precision"] = state.get("precision", "fp32")
        return record, grid

    own_record, own_grid = score(plan, bound)
    bound = bound_of(own_record)  # a sampling-sweep record's, where its plan says so (bpd_from "own_sampler")
    own = method.sampling_settings()
    for settings in sampling_grid(method, plan.sampling_sweep):
        if method.sampling_settings(**settings) != own:  # the model's own setting is the record below
            swept = plan.under(settings)
            swept_record, swept_grid = score(swept, bound if swept.bpd_from == "own_sampler" else None)
            EvalRecord.of(swept_record, swept_grid).write(layout.sampling_dir(folder, setting_key(settings)))
    EvalRecord.of(own_record, own_grid).write(folder)  # last: its presence says the finalist is whole
    return {"trial_id": trial_id, "epoch": epoch, "seconds": time.time() - t0}


def score_finalists(finalists: list[Finalist], configs: dict[str, ExperimentConfig], inputs: TrialInputs,
                    log=print) -> dict[str, str]:
    """Score every finalist not yet scored: on a cluster as concurrent Ray tasks with a worker's resources
    each; in a local run one after another in this process (a task's process would import torch and the
    evaluation again, and one worker's CPUs are most of the machine anyway).
    configs: {experiment name: its config}; inputs: the run's TrialInputs (its folder, data and reference).
    Returns {trial id: error} for the finalists whose scoring failed (each also noted in its folder)."""
    run_dir = inputs.run_dir
    local = not any(c.cluster.address for c in configs.values())
    task = ray.remote(score_finalist)
    pending, waiting = {}, []
    for f in finalists:
        if is_scored(run_dir, f.trial_id):
            log(f"finalist {f.trial_id} ({f.experiment}): already scored")
            continue
        config = configs[f.experiment]
        options, threads = task_options(config.cluster)
        if local:
            waiting.append((f, threads))
        else:
            ref = task.options(**options, name=f"finalist {f.trial_id}").remote(
                f.trial_id, f.rank, run_dir, inputs.data, inputs.reference, threads)
            pending[ref] = f
        log(f"finalist {f.trial_id} ({f.experiment}, #{f.rank} by {config.sweep.metric} = {f.value:.4g}): scoring")
    errors = {}

    def settle(f: Finalist, outcome) -> None:
        try:
            summary = outcome()
            log(f"finalist {f.trial_id}: scored epoch {summary['epoch']} in {summary['seconds']:.0f} s")
        except Exception as e:  # a finalist that cannot be scored is a missing result, not a lost sweep
            errors[f.trial_id] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else e!r}"
            storage.write_bytes(layout.finalist_failed_file(run_dir, f.trial_id),
                                json.dumps({"error": errors[f.trial_id]}).encode())
            log(f"finalist {f.trial_id}: scoring failed: {errors[f.trial_id]}")

    if waiting:
        data, reference, threads_before = ray.get(inputs.data), ray.get(inputs.reference), torch.get_num_threads()
        for f, threads in waiting:
            device = task_device(configs[f.experiment].cluster.gpus_per_worker)
            settle(f, lambda: score_finalist(f.trial_id, f.rank, run_dir, data, reference, threads, device))
        torch.set_num_threads(threads_before)
    while pending:
        [done], _ = ray.wait(list(pending), num_returns=1)
        f = pending.pop(done)
        settle(f, lambda: ray.get(done))
    return errors
