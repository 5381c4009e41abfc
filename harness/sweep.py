"""Layer 3 of 3: the sweep. Connect to Ray, prepare the dataset and its evaluation reference once,
run one Tune trial per point of the search space, then write results.parquet and report.html."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import ray
import ray.tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

import datasets
import harness
import models
import reports
from harness import storage
from harness.config import ExperimentConfig, experiment_from_dict, set_path, to_dict
from harness.evaluation import prepare_reference, sampling_grid
from harness.results import collect_results, write_results
from harness.trial import trial_driver
from reports import build_report


@dataclass
class SweepOutcome:
    run_dir: str
    results_path: str
    report_path: str
    num_rows: int
    wall_seconds: float


def connect(config: ExperimentConfig, log=print) -> None:
    """Join the cluster at ``cluster.address``, or start a local single-node Ray.

    Keeps the dashboard on: Ray Train frees an early-stopped trial's placement group through it."""
    if ray.is_initialized():
        return
    cluster = config.cluster
    if cluster.address:
        # ship this project's packages to every node, so workers run the same code as the driver
        modules = [os.path.dirname(m.__file__) for m in (harness, models, datasets, reports)]
        ray.init(address=cluster.address, runtime_env={"py_modules": modules}, log_to_driver=True)
        log(f"joined Ray cluster at {cluster.address}: {ray.cluster_resources()}")
    else:
        ray.init(num_cpus=cluster.num_cpus, include_dashboard=True, configure_logging=False)
        log(f"started local Ray: {ray.cluster_resources()}")


def resolve_resources(config: ExperimentConfig) -> ExperimentConfig:
    """Fill in cpus_per_worker when unset: one per worker on a cluster; locally, the machine's CPUs
    shared by the concurrent trials' workers after their drivers' share."""
    cluster = config.cluster
    if cluster.cpus_per_worker is None:
        if cluster.address:
            cluster.cpus_per_worker = 1.0
        else:
            total = ray.cluster_resources().get("CPU", 1.0)
            concurrent = config.sweep.max_concurrent_trials
            free = total - concurrent * cluster.cpus_per_trial_driver
            cluster.cpus_per_worker = max(0.1, round(free / (concurrent * cluster.workers_per_trial), 2))
    return config


def param_space(config: ExperimentConfig) -> dict:
    """The resolved config as a dict, with a grid_search at every path of the search space."""
    values = to_dict(config)
    for path, options in config.sweep.space.items():
        set_path(values, path, ray.tune.grid_search(list(options)))
    return values


def max_epochs(config: ExperimentConfig) -> int:
    return max([config.train.epochs, *config.sweep.space.get("train.epochs", [])])


def asha_rungs(config: ExperimentConfig) -> list[int]:
    """The epochs at which ASHA compares trials: grace_period * reduction_factor^k below the largest
    budget (the last epoch is always evaluated anyway)."""
    rungs, epoch = [], config.sweep.grace_period
    while epoch < max_epochs(config):
        rungs.append(epoch)
        epoch *= config.sweep.reduction_factor
    return rungs


def make_scheduler(config: ExperimentConfig):
    sweep = config.sweep
    if sweep.scheduler == "fifo":
        return FIFOScheduler()
    if sweep.scheduler == "asha":
        return ASHAScheduler(time_attr="epoch", metric=sweep.metric, mode=sweep.mode, max_t=max_epochs(config),
                             grace_period=sweep.grace_period, reduction_factor=sweep.reduction_factor)
    raise ValueError(f"unknown scheduler {sweep.scheduler!r}; valid: ['asha', 'fifo']")


def with_rung_evaluations(config: ExperimentConfig) -> ExperimentConfig:
    """ASHA can only compare trials on a quality metric where they were evaluated: add its rungs to
    every trial's evaluation epochs."""
    if config.sweep.scheduler == "asha":
        config.train.eval_epochs = sorted(set(config.train.eval_epochs) | set(asha_rungs(config)))
    return config


def latest_run(experiment_dir: str) -> str:
    runs = [name for name in storage.list_dir(experiment_dir) if name[:1].isdigit()]
    if not runs:
        raise FileNotFoundError(f"no run to resume under {experiment_dir}")
    return storage.join(experiment_dir, runs[-1])


def check_same_data(data, run_dir: str, data_root: str | None) -> None:
    """Raise DatasetError when ``data`` is not the data the run at ``run_dir`` started with."""
    saved = json.loads(storage.read_bytes(storage.join(run_dir, "dataset_summary.json")))
    if saved["fingerprint"] != data.fingerprint:
        raise datasets.DatasetError(
            f"{data_root or data.name}: the data changed since {run_dir} started (fingerprint {data.fingerprint}, "
            f"the run's {saved['fingerprint']}); start a new run instead")


def run_sweep(config: ExperimentConfig, resume: str | None = None, log=print) -> SweepOutcome:
    """Run the whole experiment. ``resume``: a run directory to continue (or "latest"); the run's own
    saved config is used then, with the cluster settings of this invocation."""
    t_start = time.time()
    storage_root = storage.absolute(config.cluster.storage_path or "runs")
    experiment_dir = storage.join(storage_root, config.name)
    if resume:
        run_dir = latest_run(experiment_dir) if resume == "latest" else storage.absolute(resume.rstrip("/"))
        saved = json.loads(storage.read_bytes(storage.join(run_dir, "config.json")))
        saved["cluster"] = to_dict(config.cluster)
        config = experiment_from_dict(saved)
        log(f"resuming {run_dir}")
    else:
        run_dir = storage.join(experiment_dir, time.strftime("%Y%m%d-%H%M%S"))
    # the data first: bad input fails here, before Ray starts or anything is written
    sampling_grid(config.eval.sampling_sweep)  # and a misspelt sampling sweep
    data = datasets.load(config.data)
    if resume:
        check_same_data(data, run_dir, config.data.data_root)
    connect(config, log)
    config = with_rung_evaluations(resolve_resources(config))

    summary = data.summary()
    log(f"dataset {data.name} ({data.fingerprint}): {data.channels}x{data.image_size}x{data.image_size}, "
        + ", ".join(f"{len(part)} {split}" for split, part in data.splits().items()))
    for split, counts in summary.items():
        log(f"  {split:10s} " + "  ".join(f"{name} {count}" for name, count in counts.items()))
    storage.write_bytes(storage.join(run_dir, "dataset_summary.json"), json.dumps(
        {"name": data.name, "fingerprint": data.fingerprint, "options": data.options, "counts": summary},
        indent=1).encode())
    storage.write_bytes(storage.join(run_dir, "config.json"), json.dumps(to_dict(config), indent=1).encode())

    # caches live beside the runs on a local storage path, else in ./runs/cache on the driver
    cache_dir = os.path.join(os.path.abspath("runs") if storage.is_uri(storage_root) else storage_root, "cache")
    reference = prepare_reference(data, config.eval.classifier, cache_dir, log=log)

    shared = {"run_dir": run_dir, "data": ray.put(data), "reference": ray.put(reference)}
    trainable = ray.tune.with_resources(ray.tune.with_parameters(trial_driver, shared=shared),
                                        {"CPU": config.cluster.cpus_per_trial_driver})
    if resume:
        tuner = ray.tune.Tuner.restore(run_dir, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = ray.tune.Tuner(
            trainable,
            param_space=param_space(config),
            tune_config=ray.tune.TuneConfig(
                scheduler=make_scheduler(config),
                num_samples=config.sweep.num_samples,
                max_concurrent_trials=config.sweep.max_concurrent_trials,
                trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
            ),
            run_config=ray.tune.RunConfig(name=os.path.basename(run_dir), storage_path=experiment_dir),
        )
    grid = tuner.fit()

    frame, history = collect_results(grid, run_dir, data, reference)
    results_path = write_results(frame, history, run_dir)
    report_path = build_report(run_dir)
    return SweepOutcome(run_dir, results_path, report_path, len(frame), time.time() - t_start)
