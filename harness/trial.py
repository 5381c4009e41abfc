"""Layer 2 of 3: the per-trial driver. Tune calls it once per point of the search space; it builds a
Ray Train TorchTrainer for that point and runs it. Train V2 resumes automatically from the last
checkpoint when a trainer with the same (storage_path, name) runs again, so the run name is the trial
id: a restored Tune experiment continues each trial where it stopped. After the sweep's scheduler restarts
the trial from other weights (harness/schedulers.py) it is "<trial id>-x<N>", a run that starts from the
restart's copy."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import ray
import ray.train
import ray.tune
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

try:  # Ray Train's internal module (2.60): where it moves, trials keep its actor and tests/test_ray_sweep.py says so
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
except ImportError:  # pragma: no cover - another Ray release
    DatasetsCallback = None

from condgen_bench.harness import resume as resumes
from condgen_bench.harness.config import ClusterConfig, ExperimentConfig, experiment_from_dict, from_dict
from condgen_bench.harness.schedulers import scheduler_of
from condgen_bench.harness.worker import LoopConfig, train_worker
from condgen_bench.reports.run_folder import layout, storage
from condgen_bench.reports.run_folder.checkpoint import CheckpointError


def check_snapshot(train_storage: str, trial_id: str) -> None:
    """Raise CheckpointError naming the file when the trial's Ray Train snapshot exists but cannot be read,
    or names a checkpoint folder that is gone (Ray's own errors do not say which file, or say it at length)."""
    path = layout.train_snapshot(train_storage, trial_id)
    if not storage.exists(path):
        return
    try:
        snapshot = json.loads(storage.read_bytes(path))
    except ValueError as error:
        raise CheckpointError(f"cannot resume: unreadable Ray Train checkpoint snapshot {path} ({error}); restore "
                              "it, or start a new run") from None
    for result in snapshot.get("checkpoint_results") or []:
        folder = layout.train_checkpoint_dir(train_storage, trial_id, result.get("checkpoint_dir_name", ""))
        if not storage.exists(folder):
            raise CheckpointError(f"cannot resume: {path} names checkpoint folder {folder}, which is missing; "
                                  "restore it, or start a new run")


def check_trial_folder(run_dir: str, trial_id: str, run_name: str) -> None:
    """Raise CheckpointError naming the folder when the trial's Ray Train folder is gone but epochs of the
    trial are recorded in the run (a deleted or lost train/<trial>): Ray Train would start it afresh at epoch
    0 without a word, beside the abandoned run's records. (A restart's first start of its own Train run,
    "<trial>-x<N>", has records and no folder yet: that is not a loss.)"""
    folder = layout.train_run_dir(layout.train_storage(run_dir), run_name)
    recorded = layout.history_files(run_dir, trial_id)
    # Ray Train makes the folder when the trial first starts (its storage check's marker file), so a trial that
    # ran but never checkpointed (it failed in its first epoch) has one, and starts afresh rightly
    if run_name == trial_id and recorded and not storage.exists(folder):
        raise CheckpointError(f"cannot resume trial {trial_id}: its Ray Train folder {folder} is gone "
                              f"while {len(recorded)} of its epochs are recorded in "
                              f"{layout.history_dir(run_dir, trial_id)}; restore the folder, "
                              "or start a new run (never a silent fresh start)")


def worker_resources(cluster: ClusterConfig) -> tuple[dict[str, float], int]:
    """Resources a worker (and a finalist's scoring task) asks Ray for, and the torch threads it runs with."""
    cpus = cluster.cpus_per_worker if cluster.cpus_per_worker is not None else 1.0
    resources = {"CPU": cpus, **cluster.worker_resources}
    if cluster.gpus_per_worker > 0:
        resources["GPU"] = cluster.gpus_per_worker
    threads = cluster.threads_per_worker or max(1, round(cpus))
    return resources, threads


def task_options(cluster: ClusterConfig) -> tuple[dict, int]:
    """Ray task options that ask for what a worker asks (a finalist's scoring task), and its threads."""
    resources, threads = worker_resources(cluster)
    custom = {k: v for k, v in resources.items() if k not in ("CPU", "GPU")}
    return {"num_cpus": resources["CPU"], "num_gpus": resources.get("GPU", 0), "resources": custom}, threads


class Trainer(TorchTrainer):
    """Ray Train's TorchTrainer, less its Ray Data callback when there are no Ray Datasets (there never are
    here: the data travels as one object-store copy). Ray Train 2.60 starts that callback's DatasetManager
    actor, a process of its own (~2 s of CPU to start on a small machine), for every worker group whether
    or not datasets were passed. tests/test_ray_sweep.py checks that no such actor starts, so a Ray release
    that renames the hook fails there rather than silently."""

    def _create_default_callbacks(self):
        callbacks = super()._create_default_callbacks()
        if self.datasets or DatasetsCallback is None:
            return callbacks
        return [c for c in callbacks if not isinstance(c, DatasetsCallback)]


def trial_settings(config: dict, run_dir: str, trial_id: str, changes: list[dict]) -> tuple[dict, int]:
    """The config a trial runs under, and how many times the scheduler has restarted it: Tune's config of
    the trial (a resolved ExperimentConfig dict), with the settings of its last restart record, then the
    changes resumes made (``changes``: harness/resume.py run_changes). A scheduler writes a restart's record
    before Tune saves the trial's new config: a driver killed between the two restores the old config, while
    the copied weights, the report and the results follow the record, so the record's settings win."""
    config, restarts = resumes.with_last_restart(config, run_dir, trial_id)
    return resumes.values_at(config, changes, None), restarts


def restart_start(run_dir: str, trial_id: str, restarts: int) -> dict | None:
    """Where a trial's first Train run after its ``restarts``-th restart starts (None before any): the
    restart's copy of the checkpoint, with training-noise streams of its own (not those of the trial it
    copied, which goes on drawing them: an offset by the copied epoch and the restart's number), under the
    Train run name layout.train_run_name gives. The worker's LoopConfig.start."""
    if not restarts:
        return None
    record = json.loads(storage.read_bytes(layout.restart_record(run_dir, trial_id, restarts)))
    return {"checkpoint": layout.restart_dir(run_dir, trial_id, restarts),
            "noise_offset": 7919 * int(record["epoch"]) + 104_729 * restarts, "why": record["why"]}


def kept_checkpoints(config: ExperimentConfig, run_dir: str, trial_id: str) -> dict[int, list[str]]:
    """{epoch: [folder]}: where the trial's worker copies its checkpoint of an epoch beside Ray Train's (which
    rotate): at each smaller budget's last epoch (the finalist stage scores it: harness/budgets.py) and
    where the sweep's scheduler asks (harness/schedulers.py kept_checkpoints)."""
    keep = {epoch: [layout.budget_checkpoint(run_dir, trial_id, epoch)] for epoch in config.train.budgets}
    for epoch, folders in scheduler_of(config).kept_checkpoints(config, run_dir, trial_id).items():
        keep.setdefault(epoch, []).extend(folders)
    return keep


@dataclass(frozen=True)
class TrialInputs:
    """What every trial of a run receives beside its point of the search space (harness/sweep.py makes it)."""

    run_dir: str  # absolute path or URI
    data: ray.ObjectRef  # the DatasetSplits, one object-store copy
    reference: ray.ObjectRef  # the EvalReference
    # this invocation's ClusterConfig dict: over each trial's saved settings, also when restored (a resumed
    # run may change workers, GPUs or max_failures)
    cluster: dict
    changes: dict[str, list[dict]] = field(default_factory=dict)  # experiment -> what resumes changed (resume.py)
    code_version: str | None = None  # this driver's code, recorded with each epoch
    fault: str | None = None  # the drills' fault hook (reports/run_folder/faults.py), passed on; None in real runs


def trial_driver(config: dict, inputs: TrialInputs) -> None:
    """Tune function trainable. config: a resolved ExperimentConfig dict (one point of the space). The trial
    takes the settings resumes changed over Tune's saved config, and runs under this invocation's cluster."""
    trial_id = ray.tune.get_context().get_trial_id()
    changes = inputs.changes.get(config["name"], [])
    config, restarts = trial_settings(config, inputs.run_dir, trial_id, changes)
    experiment = experiment_from_dict(config)
    cluster = from_dict(ClusterConfig, inputs.cluster)
    resources, threads = worker_resources(cluster)
    resources["CPU"] = scheduler_of(experiment).worker_cpus(resources["CPU"])
    # after a restart the trial trains on from the restart's copy under a Train run of its own
    run_name = layout.train_run_name(trial_id, restarts)
    check_trial_folder(inputs.run_dir, trial_id, run_name)
    check_snapshot(layout.train_storage(inputs.run_dir), run_name)
    loop = LoopConfig(
        experiment=config, trial_id=trial_id, run_dir=inputs.run_dir, data=inputs.data, reference=inputs.reference,
        threads=threads, fault=inputs.fault, changes=changes, cluster=inputs.cluster, code_version=inputs.code_version,
        # where the trial starts when Ray Train has no checkpoint of its run (a restart's copy), and the
        # checkpoints it keeps beside Train's, by epoch
        start=restart_start(inputs.run_dir, trial_id, restarts),
        keep=kept_checkpoints(experiment, inputs.run_dir, trial_id))
    trainer = Trainer(
        train_worker,
        train_loop_config={"loop": loop},
        scaling_config=ray.train.ScalingConfig(
            num_workers=cluster.workers_per_trial,
            use_gpu=cluster.gpus_per_worker > 0,
            resources_per_worker=resources,
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=layout.train_storage(inputs.run_dir),
            callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=experiment.train.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=cluster.max_failures),
        ),
    )
    trainer.fit()
