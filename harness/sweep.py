"""Layer 3 of 3: the sweep. Connect to Ray, prepare the dataset and its evaluation reference once,
run one Tune trial per point of the search space (of each experiment, for a benchmark of several
methods), score each experiment's finalists with the full suite, then write results.parquet and
report.html."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass

import pandas as pd
import ray
import ray.tune
import torch

from condgen_bench import datasets, harness, models, reports
from condgen_bench.harness import resume as resumes
from condgen_bench.harness.budgets import folded_budgets
from condgen_bench.harness.config import ExperimentConfig, experiment_from_dict, set_path, to_dict
from condgen_bench.harness.finalists import score_finalists, select_finalists
from condgen_bench.harness.front import mark_front
from condgen_bench.harness.nodes import await_placed, check_shared_storage, reference_options
from condgen_bench.harness.evaluation.reference import EvalReference, prepare_reference
from condgen_bench.harness.results import code_version, collect_results, write_results
from condgen_bench.reports.run_folder.runs import RunLock, latest_run, new_run_dir
from condgen_bench.harness.schedulers import scheduler_of
from condgen_bench.harness.search import search_algorithm, tune_space
from condgen_bench.harness.trial import TrialInputs, trial_driver, worker_resources
from condgen_bench.models.accel import task_device
from condgen_bench.reports import build_report
from condgen_bench.reports.run_folder import faults, layout, storage


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
        ray.init(address=cluster.address, runtime_env={"py_modules": [package_folder()]}, log_to_driver=True)
        log(f"joined Ray cluster at {cluster.address}: {ray.cluster_resources()}")
    else:
        start_local_ray(cluster.num_cpus, configure_logging=False)
        log(f"started local Ray: {ray.cluster_resources()}")


def package_folder() -> str:
    """A temporary folder condgen_bench/ holding copies of this project's four packages, as they are
    installed (one import package, condgen_bench), for Ray's py_modules: Ray ships a folder under its own
    name, and condgen_bench itself is a namespace with no folder of its own in the repository."""
    target = os.path.join(tempfile.mkdtemp(prefix="condgen-bench-modules-"), "condgen_bench")
    for module in (harness, models, datasets, reports):
        shutil.copytree(os.path.dirname(module.__file__), os.path.join(target, module.__name__.rsplit(".", 1)[-1]),
                        ignore=shutil.ignore_patterns("__pycache__", "*.png"))
    return target


LOCAL_RAY_ENV = {
    # Ray Train's controller looks at its workers every 2 s by default, so a finished trial waits ~4 s for
    # it to notice; locally a look is a cheap call, and trials of seconds are common (smoke tests, small data)
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    # and a watcher of preempted cloud nodes (a process per trial) has no node to watch on one machine
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}


def set_local_ray_env() -> None:
    """Set LOCAL_RAY_ENV in this process (where not set already), before a local Ray starts: Ray's processes,
    and through them every trial's controller, inherit it."""
    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)


def start_local_ray(num_cpus: int | None, **options) -> None:
    """Start a new single-node Ray (never join one that happens to run on this machine) whose processes
    are all told its address: Ray Train's placement-group cleaner, which frees an early-stopped trial's
    resources, queries the dashboard, and without an address it guesses, and fails when a second local
    Ray (another sweep, the tests) runs on the machine. ``options``: more ray.init arguments."""
    set_local_ray_env()
    with socket.socket() as probe:  # a free port for the dashboard, whose address every process gets
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = f"http://127.0.0.1:{port}"
    context = ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_port=port,
                       runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": api}}, **options)
    os.environ["RAY_API_SERVER_ADDRESS"] = api  # this driver's own queries
    if context.dashboard_url and not context.dashboard_url.endswith(f":{port}"):
        raise RuntimeError(f"the dashboard took {context.dashboard_url}, not port {port} (taken meanwhile?); "
                           "run again")


def resolve_resources(config: ExperimentConfig) -> ExperimentConfig:
    """Fill in what is unset: cpus_per_worker (one per worker on a cluster; locally, the machine's CPUs
    shared by the concurrent trials' workers after their drivers' share), max_concurrent_trials
    (``concurrency``) and max_failures (``default_max_failures``)."""
    cluster = config.cluster
    cluster.max_failures = default_max_failures(cluster)
    if cluster.cpus_per_worker is None and cluster.address:
        cluster.cpus_per_worker = 1.0
    if config.sweep.max_concurrent_trials is None:
        config.sweep.max_concurrent_trials = concurrency(config, ray.cluster_resources())
    if cluster.cpus_per_worker is None:
        total = ray.cluster_resources().get("CPU", 1.0)
        concurrent = config.sweep.max_concurrent_trials
        free = total - concurrent * cluster.cpus_per_trial_driver
        cluster.cpus_per_worker = max(0.1, round(free / (concurrent * cluster.workers_per_trial), 2))
    return config


def concurrency(config: ExperimentConfig, resources: dict) -> int:
    """How many trials run at once where sweep.max_concurrent_trials is unset: locally 1 (a laptop's cores
    go to one trial's workers); on a cluster, as many trials as its CPUs and GPUs hold, each one driver
    (cpus_per_trial_driver) and workers_per_trial workers (cpus_per_worker, gpus_per_worker). resources:
    ray.cluster_resources()."""
    cluster = config.cluster
    if not cluster.address:
        return 1
    per_trial_cpus = cluster.cpus_per_trial_driver + cluster.workers_per_trial * (cluster.cpus_per_worker or 1.0)
    fits = [resources.get("CPU", 0.0) / per_trial_cpus]
    if cluster.gpus_per_worker > 0:
        fits.append(resources.get("GPU", 0.0) / (cluster.workers_per_trial * cluster.gpus_per_worker))
    return max(1, int(min(fits) + 1e-9))


def default_max_failures(cluster) -> int:
    """cluster.max_failures, or where unset 3 on a cluster (a lost node should cost minutes, not the trial)
    and 0 locally (a local crash is usually a bug)."""
    if cluster.max_failures is not None:
        return cluster.max_failures
    return 3 if cluster.address else 0


def cluster_changes(saved: dict, current: dict) -> list[str]:
    """The cluster settings a resumed run changes: ["name: old -> new", ...] (both to_dict(ClusterConfig))."""
    return [f"{key}: {saved.get(key)!r} -> {value!r}" for key, value in current.items()
            if key in saved and saved[key] != value]


def param_space(config: ExperimentConfig) -> dict:
    """The resolved config as a dict, with a Tune domain at every path of the search space (harness/search.py:
    grid_search over a grid's lists, else choices and distributions); swept epoch budgets that one run can
    stand for (harness/budgets.py) become that run's train.epochs and budgets; a grid's repeats
    (num_samples) its train.seed."""
    values = to_dict(config)
    space = dict(config.sweep.space)
    budgets = folded_budgets(config)
    if budgets:
        del space["train.epochs"]
        values["train"]["epochs"], values["train"]["budgets"] = budgets[-1], budgets[:-1]
    sweep = config.sweep
    if sweep.search == "grid" and sweep.num_samples > 1 and "train.seed" not in space:
        # repeats of a grid point are runs with their own seeds (a copy of a seeded run would be identical)
        space["train.seed"] = [config.train.seed + i for i in range(sweep.num_samples)]
    for path, domain in tune_space(space, sweep.search).items():
        set_path(values, path, domain)
    return values


def tune_samples(config: ExperimentConfig) -> int:
    """Tune's num_samples: the points a random or Optuna search draws; 1 for a grid, whose repeats are
    seeds in the grid (param_space)."""
    return 1 if config.sweep.search == "grid" else config.sweep.num_samples


def check_same_data(data, run_dir: str, data_root: str | None) -> None:
    """Raise DatasetError when ``data`` is not the data the run at ``run_dir`` started with (its dataset
    of that name, in a run of several)."""
    saved = json.loads(storage.read_bytes(layout.run_file(run_dir, layout.DATASET_SUMMARY)))
    if "datasets" in saved:  # a run over several datasets
        saved = next((d for d in saved["datasets"] if d["name"] == data.name), None)
    if saved is None:
        raise datasets.DatasetError(f"{data_root or data.name}: the run {run_dir} has no dataset {data.name}")
    if saved["fingerprint"] != data.fingerprint:
        raise datasets.DatasetError(
            f"{data_root or data.name}: the data changed since {run_dir} started (fingerprint {data.fingerprint}, "
            f"the run's {saved['fingerprint']}); start a new run instead")


def dataset_groups(configs: list[ExperimentConfig]) -> list[list[ExperimentConfig]]:
    """The experiments grouped by their data (config.data), in order of first appearance: each group
    shares one loaded dataset and one evaluation reference."""
    groups: dict[str, list[ExperimentConfig]] = {}
    for config in configs:
        groups.setdefault(json.dumps(to_dict(config.data), sort_keys=True), []).append(config)
    return list(groups.values())


def check_shared(configs: list[ExperimentConfig]) -> None:
    """The experiments of one run share the cluster; those on one dataset (a benchmark may hold several)
    share the evaluation classifier; datasets differ by name (the results' dataset column); experiment
    names (each one's folder in a benchmark run) differ."""
    first = configs[0]
    for config in configs[1:]:
        if to_dict(config.cluster) != to_dict(first.cluster):
            raise ValueError(f"experiments {first.name!r} and {config.name!r} differ in cluster: a run shares it")
    groups = dataset_groups(configs)
    for group in groups:
        for config in group[1:]:
            if to_dict(config.eval.classifier) != to_dict(group[0].eval.classifier):
                raise ValueError(f"experiments {group[0].name!r} and {config.name!r} differ in eval.classifier")
    names = [group[0].data.name for group in groups]
    if len(set(names)) != len(names):
        raise ValueError(f"one run holds each dataset once, got {names} with different settings; run the "
                         "variants as separate runs and build one report over them "
                         "(python -m condgen_bench.reports RUN_DIR RUN_DIR ...)")
    names = [config.name for config in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"experiment names must differ within a run, got {names}")


def run_sweep(config: ExperimentConfig | list[ExperimentConfig], resume: str | None = None, log=print,
              name: str | None = None, allow_changes: list[str] | None = None) -> SweepOutcome:
    """Run the whole experiment: one config's sweep, or (a list: a benchmark) every config's sweep in
    turn on the same data with the same evaluation, into one run directory, results file and report.

    ``name``: the run's folder under the storage path (default: the single config's name). ``resume``: a
    run directory to continue (or "latest"); the run's own saved configs are used then, with the cluster
    settings of this invocation. ``config`` must otherwise match them, but for the settings named in
    ``allow_changes``, which every trial takes from its next epoch (harness/resume.py)."""
    if allow_changes and not resume:
        raise ValueError("--allow-changes applies to a --resume only")
    t_start = time.time()
    configs = [config] if isinstance(config, ExperimentConfig) else list(config)
    run_name = name or configs[0].name
    cluster = configs[0].cluster
    storage_root = storage.absolute(cluster.storage_path or "runs")
    experiment_dir = layout.experiment_dir(storage_root, run_name)
    saved_cluster, locks, changes = None, [], {}  # the run's lock, once taken: released however the run ends
    if resume:
        # the run is its folder, wherever it is now (moved, copied, another --name): its config and Tune's
        # state are read from it, and nothing is written anywhere else
        run_dir = latest_run(experiment_dir) if resume == "latest" else storage.absolute(resume.rstrip("/"))
        if not storage.exists(layout.run_file(run_dir, layout.CONFIG)):
            raise FileNotFoundError(f"cannot resume {run_dir}: it has no {layout.CONFIG} (not a run folder)")
        locks.append(RunLock(run_dir, log).acquire())  # a second driver on this run refuses here
        try:
            saved = json.loads(storage.read_bytes(layout.run_file(run_dir, layout.CONFIG)))
            saved_cluster = saved.get("experiments", [saved])[0].get("cluster", {})
            entries = saved.get("experiments", [saved])
            changes = resume_changes(entries, [to_dict(c) for c in configs], allow_changes or [], log)
            configs = [experiment_from_dict({**resumes.apply(values, {p: v[1] for p, v in changes[values["name"]].items()}),
                                             "cluster": to_dict(cluster)}) for values in entries]
            run_name = saved.get("name", run_name) if "experiments" in saved else run_name
            check_tune_state(run_dir, configs)
            for c in configs:
                scheduler_of(c).check_resume(run_dir, c)
            # the run is locked and none of its trials runs: a temporary file in it is a killed writer's
            for path in storage.remove_temporaries(run_dir):
                log(f"removed {path}, a temporary file a killed writer left")
        except BaseException:
            locks.pop().release()
            raise
        log(f"resuming {run_dir}")
    try:
        return _run(configs, run_dir if resume else None, experiment_dir, run_name, locks, saved_cluster, changes,
                    log, t_start)
    finally:
        for lock in locks:
            lock.release()


def resume_changes(saved: list[dict], given: list[dict], allow: list[str], log=print) -> dict[str, dict]:
    """The changes a resume makes, {saved experiment name: {path: (old, new)}} (harness/resume.py), with each
    logged. ``saved``: the run's experiments' config dicts; ``given``: this invocation's, in the same order.
    Raises ResumeChangeError naming what differs and may not (or cannot) change."""
    if len(saved) != len(given):
        raise resumes.ResumeChangeError(
            f"the run has {len(saved)} experiments ({', '.join(v['name'] for v in saved)}), this invocation "
            f"{len(given)} ({', '.join(v['name'] for v in given)})")
    changes = {}
    for old, new in zip(saved, given):
        changes[old["name"]] = resumes.allowed_changes(old, new, allow)
        experiment = experiment_from_dict(new)
        fixed = sorted(set(changes[old["name"]]) & set(scheduler_of(experiment).fixed_settings(experiment)))
        if fixed:
            raise resumes.ResumeChangeError(f"a resume cannot change {', '.join(fixed)}: the scheduler "
                                            f"({experiment.sweep.scheduler}) sets it during the run; start a new run for that")
        for path, value in resumes.new_fields(old, new).items():
            log(f"{old['name']}: {path} is not in the run's saved config (older code made it): its trials take {value!r}")
        for path, (before, after) in changes[old["name"]].items():
            log(f"{old['name']}: {path}: {before!r} -> {after!r} for every trial from its next epoch (--allow-changes)")
    unused = set(allow) - {p for c in changes.values() for p in c}
    if unused:
        log(f"--allow-changes {' '.join(sorted(unused))}: no such difference (nothing changed there)")
    return changes


def check_tune_state(run_dir: str, configs: list[ExperimentConfig]) -> None:
    """Raise FileNotFoundError naming what is missing when the run at ``run_dir`` has trials but not the Tune
    state to resume them from (a run killed before Tune first saved it starts its experiment afresh in place)."""
    trained = storage.list_dir(layout.train_storage(run_dir))  # every experiment's trial runs: listed once
    for c in configs:
        path = tune_path(run_dir, c, len(configs))
        if trained and not ray.tune.Tuner.can_restore(path):
            raise FileNotFoundError(f"cannot resume {run_dir}: Tune's state for {c.name} is not in {path} "
                                    f"(no experiment_state-*.json), although {len(trained)} trial runs are in "
                                    f"{layout.train_storage(run_dir)}")


def tune_path(run_dir: str, config: ExperimentConfig, experiments: int) -> str:
    """Where an experiment's Tune state lives (layout.tune_dir)."""
    return layout.tune_dir(run_dir, config.name, experiments)


def _run(configs: list[ExperimentConfig], run_dir: str | None, experiment_dir: str, run_name: str,
         locks: list[RunLock], saved_cluster: dict | None, setting_changes: dict[str, dict], log,
         t_start: float) -> SweepOutcome:
    """run_sweep once the run is known: ``run_dir`` (its lock in ``locks``) for a resume, else None (a new
    run's folder is made once its data has loaded, and its lock added to ``locks``); ``setting_changes``: what
    the resume changes ({experiment: {path: (old, new)}}, resume_changes)."""
    resume = run_dir is not None
    cluster = configs[0].cluster
    storage_root = storage.absolute(cluster.storage_path or "runs")
    check_shared(configs)
    groups = dataset_groups(configs)
    # the data first: bad input fails here, before Ray starts or anything is written (a bad setting failed
    # earlier, in cli.check_builds)
    loaded = [datasets.load(group[0].data) for group in groups]
    if resume:
        for group, data in zip(groups, loaded):
            check_same_data(data, run_dir, group[0].data.data_root)
    connect(configs[0], log)
    configs = [resolve_resources(c) for c in configs]
    groups = dataset_groups(configs)
    if saved_cluster is not None:  # restored trials run with this invocation's cluster settings
        changes = cluster_changes(saved_cluster, to_dict(configs[0].cluster))
        log("cluster settings changed for the resumed trials: " + ("; ".join(changes) if changes else "none"))
    cache_dir = storage.absolute(cluster.cache_dir) if cluster.cache_dir else layout.default_cache_dir(storage_root)
    if cluster.address:  # before anything is written: every node must see the run's files
        check_shared_storage(storage_root, "storage path", log)
        if cluster.cache_dir:
            check_shared_storage(cache_dir, "cache dir", log)
    if not resume:  # the data loaded and the storage checked: now the run's own folder, new and locked
        run_dir = new_run_dir(experiment_dir)
        locks.append(RunLock(run_dir, log).acquire())
        storage.write_bytes(layout.run_file(run_dir, layout.ORIGIN), json.dumps({"folder": run_dir}).encode())

    summaries = [describe_data(data, log) for data in loaded]
    storage.write_bytes(layout.run_file(run_dir, layout.DATASET_SUMMARY), json.dumps(
        summaries[0] if len(summaries) == 1 else {"datasets": summaries}, indent=1).encode())
    saved = (to_dict(configs[0]) if len(configs) == 1 else
             {"name": run_name, "sweep": to_dict(configs[0].sweep), "experiments": [to_dict(c) for c in configs]})
    storage.write_bytes(layout.run_file(run_dir, layout.CONFIG), json.dumps(saved, indent=1).encode())
    code = code_version()
    invocations = resumes.record_invocation(run_dir, code, to_dict(configs[0].cluster), setting_changes, log)
    faults.hit("run_files", run=run_dir)

    # every dataset's evaluation reference (on a cluster Ray tasks, at once), then each dataset's experiments
    data_refs = [ray.put(data) for data in loaded]
    if cluster.address:
        tasks = [reference_task(data_ref, group[0], cache_dir) for data_ref, group in zip(data_refs, groups)]
        reference_refs = [ref for ref, _ in tasks]
        references = await_placed(reference_refs, "evaluation reference", tasks[0][1], log)
    else:  # locally in this process: a task's process would start and import torch and the evaluation again
        references = [local_reference(data, group[0], cache_dir, log) for data, group in zip(loaded, groups)]
        reference_refs = [ray.put(reference) for reference in references]
    pin_references(run_dir, loaded, references, log)  # a resume scores with the run's own reference, or stops
    frames, histories = [], []
    for group, data, data_ref, reference, reference_ref in zip(groups, loaded, data_refs, references, reference_refs):
        inputs = TrialInputs(run_dir, data_ref, reference_ref, to_dict(configs[0].cluster),
                             {c.name: resumes.run_changes(invocations, c.name) for c in group}, code, faults.spec())
        grids = {}
        for c in group:
            grids[c.name] = tune_experiment(c, inputs, tune_path(run_dir, c, len(configs)), resume=bool(resume),
                                            log=log)
        # the finalist stage: the dataset's experiments' best trials at once, concurrently where resources allow
        collected = {c.name: collect_results(grids[c.name], run_dir, data, reference) for c in group}
        finalists = [f for c in group for f in select_finalists(*collected[c.name].frames(finalists=False), c)]
        score_finalists(finalists, {c.name: c for c in group}, inputs, log=log)
        faults.hit("results")
        for c in group:  # the rows read once, with the finalist records just written
            frame, history = collected[c.name].frames()
            frames.append(mark_front(frame, c))  # the objectives' front, where sweep.objectives sets several
            histories.append(history)
    frame = pd.concat(frames, ignore_index=True)
    history = pd.concat(histories, ignore_index=True)
    results_path = write_results(frame, history, run_dir)
    report_path = build_report(run_dir)
    return SweepOutcome(run_dir, results_path, report_path, len(frame), time.time() - t_start)


def pin_references(run_dir: str, loaded: list, references: list[EvalReference], log=print) -> None:
    """Record each dataset's evaluation reference in the run (reference.json: EvalReference.pins by dataset
    fingerprint) the first time, and check it every time after: a resume whose classifier, CAS ceiling, the
    augmentation gain's real-only arm or real features differ (a removed or changed cache retrained to other
    weights, a changed classifier) is refused before it scores anything, so that no run mixes rows scored with
    two references. An extractor the run did not have before (or has no longer: Inception weights not on this
    machine) is not a difference: its rows say the figure is missing; nor is a pin the run had no entry for."""
    path = layout.run_file(run_dir, layout.REFERENCE)
    pinned = json.loads(storage.read_bytes(path)) if storage.exists(path) else {}
    for data, reference in zip(loaded, references):
        now, before = reference.pins(), pinned.get(data.fingerprint)
        if before is None:
            pinned[data.fingerprint] = now
            continue
        # a run pinned before the gain's real-only arm was part of the reference has no entry for it
        differs = [f"{what} ({before[key]} -> {now[key]})" for key, what in
                   (("classifier", "the evaluation classifier's weights"), ("classifier_accuracy", "its real accuracy"),
                    ("cas_real_accuracy", "CAS's real ceiling"),
                    ("aug_real_accuracy", "the augmentation gain's real-only arm"))
                   if key in before and before[key] != now[key]]
        differs += [f"the real {kind} features ({before['features'][kind]} -> {now['features'][kind]})"
                    for kind in sorted(before["features"].keys() & now["features"].keys())
                    if before["features"][kind] != now["features"][kind]]
        if differs:
            raise resumes.ResumeChangeError(
                f"cannot resume {run_dir}: its rows of {data.name} were scored with another evaluation reference "
                f"than this driver's ({'; '.join(differs)}; pinned in {path}): the cache was removed and trained "
                "again to other weights, or changed, or the classifier's code changed. Restore the cache the run "
                "used, or start a new run (never rows scored with two references in one run)")
        log(f"evaluation reference of {data.name}: the run's own (classifier {now['classifier']})")
        before["features"].update({k: v for k, v in now["features"].items() if k not in before["features"]})
        before.update({k: v for k, v in now.items() if k not in before})
    storage.write_bytes(path, json.dumps(pinned, indent=1).encode())


def describe_data(data, log=print) -> dict:
    """Log the dataset's shape and images per class per split; returns its dataset_summary.json entry."""
    summary = data.summary()
    log(f"dataset {data.name} ({data.fingerprint}): {data.channels}x{data.image_size}x{data.image_size}, "
        + ", ".join(f"{len(part)} {split}" for split, part in data.splits().items()))
    for split, counts in summary.items():
        log(f"  {split:10s} " + "  ".join(f"{name} {count}" for name, count in counts.items()))
    return {"name": data.name, "fingerprint": data.fingerprint, "options": data.options, "counts": summary}


def _reference(data, eval_config, cache_dir: str, threads: int) -> EvalReference:
    torch.set_num_threads(threads)
    return prepare_reference(data, eval_config, cache_dir, device=task_device(len(ray.get_gpu_ids())))


def local_reference(data, config: ExperimentConfig, cache_dir: str, log=print) -> EvalReference:
    """The evaluation reference made in this process (a local run): on a GPU where the workers use one."""
    return prepare_reference(data, config.eval, cache_dir, log=log, device=task_device(config.cluster.gpus_per_worker))


def reference_task(data_ref: ray.ObjectRef, config: ExperimentConfig, cache_dir: str) -> tuple[ray.ObjectRef, dict]:
    """The evaluation reference (harness/evaluation/reference.py) made by a Ray task with what some node has: a training
    worker's CPUs and, where a node has a GPU beside them, one GPU (harness/nodes.py reference_options): not on
    the driver, which may be a small head node. Returns the reference's ObjectRef (what trials and finalists
    receive) and the resources it asked for."""
    resources, threads = worker_resources(config.cluster)
    options = reference_options(resources["CPU"], ray.nodes())
    task = ray.remote(_reference).options(**options, name="evaluation reference")
    return task.remote(data_ref, config.eval, cache_dir, threads), options


def tune_experiment(config: ExperimentConfig, inputs: TrialInputs, path: str, resume: bool,
                    log=print) -> ray.tune.ResultGrid:
    """Run (or, with ``resume``, continue where it exists) the Tune experiment of one config's search
    space in the folder ``path`` (tune_path); returns its ResultGrid."""
    scheduler = scheduler_of(config)
    driver = scheduler.driver_cpus(config, ray.cluster_resources().get("CPU", 1.0))
    trainable = ray.tune.with_resources(ray.tune.with_parameters(trial_driver, inputs=inputs),
                                        {"CPU": driver, **config.cluster.driver_resources})
    storage_path, name = storage.split(path)
    if resume and ray.tune.Tuner.can_restore(path):
        tuner = ray.tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
        if scheduler.restore_note(config):
            log(scheduler.restore_note(config))
        # Tuner.restore takes no RunConfig: Tune's own retries stay the first run's; Ray Train's (which
        # restart a trial's workers after a lost worker or node) follow this invocation's max_failures
    else:
        budgets = folded_budgets(config)
        log(f"{config.name}: {config.method}, search space {config.sweep.space}"
            + (f"; epoch budgets {budgets} read off one run per point" if budgets else "")
            + (f"; {scheduler.describe(config)}" if scheduler.describe(config) else ""))
        tuner = ray.tune.Tuner(
            trainable,
            param_space=param_space(config),
            tune_config=ray.tune.TuneConfig(
                scheduler=scheduler.tune_scheduler(config, inputs.run_dir),
                search_alg=search_algorithm(config.sweep, scheduler.trial_cap(config.sweep)),
                num_samples=tune_samples(config),
                max_concurrent_trials=scheduler.trial_cap(config.sweep),
                trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
                # a finished trial's driver process runs the next trial (3-4 s of process start and imports
                # saved per trial); not where a scheduler stops or pauses trials, whose drivers are still
                # inside trainer.fit() and cannot be reset
                reuse_actors=config.sweep.scheduler == "fifo",
            ),
            run_config=ray.tune.RunConfig(name=name, storage_path=storage_path,
                                          failure_config=ray.tune.FailureConfig(max_failures=config.cluster.max_failures)),
        )
    return tuner.fit()
