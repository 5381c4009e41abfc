"""Layer 1 of 3: the Ray Train worker function, run on every DDP rank of a trial.

It knows nothing about the method's family: it builds the method from the registry, feeds it this
rank's shard of each epoch, reports the loss every epoch with a checkpoint, evaluates on rank 0 where
the evaluation plan (harness/evaluation/plan.py) says, and resumes from the last checkpoint when Ray Train
restarts it. A trial whose training diverges (a non-finite loss, a discriminator that wins completely for
too long) is ended with that reason recorded: a result of the sweep, not an error.

On a GPU the step statistics stay on the device and are read every ``train.sync_every`` steps
(harness/steps.py); every collective uses tensors on the worker's device; the training split is moved
to the device once when it fits; the step runs at ``train.precision`` (models/accel.py), the evaluation
in plain fp32 (models/accel.py evaluation_math).

While rank 0 evaluates, the other ranks wait in ``ray.train.report``'s barrier (Ray's synchronization actor,
which has no timeout unless RAY_TRAIN_COLLECTIVE_TIMEOUT_S sets one, and logs every minute), never in a
process-group collective, whose timeout (30 minutes by default) a long evaluation would exceed: every
collective of an epoch comes before the evaluation (``finish_epoch``).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

import ray
import ray.train
import ray.train.torch
import torch

from condgen_bench.harness import best
from condgen_bench.harness import resume as resumes
from condgen_bench.harness.config import ExperimentConfig, TrainConfig, experiment_from_dict
from condgen_bench.harness.evaluation.plan import Capabilities, trial_plan
from condgen_bench.harness.steps import (DivergenceWatch, StepStats, epoch_batches, gather_noise_states, noise_seed,
                                          restore_noise, steps_per_epoch, training_tensors)
from condgen_bench.models import build_method
from condgen_bench.models.accel import Acceleration, device_name, resolve_precision, set_training_math
from condgen_bench.models.interface import Method
from condgen_bench.reports.run_folder import faults, layout, storage
from condgen_bench.reports.run_folder.checkpoint import TrialCheckpoint
from condgen_bench.reports.run_folder.records import EvalRecord


def configure_device(device: torch.device, train: TrainConfig) -> tuple[Acceleration, str]:
    """Set the process's training math for ``device`` (TF32 on CUDA per ``train.tf32``) and return the
    training step's Acceleration, with "auto" precision resolved for this device, and the math mode's name."""
    math_mode = set_training_math(device, train.tf32)
    return Acceleration(resolve_precision(train.precision, device), train.channels_last, train.compile), math_mode


def checkpoint_state(method: Method, config: dict, epoch: int, precision: str, noise_states: list) -> dict:
    """What a trial's checkpoint holds after ``epoch`` (reports/run_folder/checkpoint.py saves and reads it):
    the method's state, the trial's resolved config dict, the training precision and every rank's noise state."""
    return {"method": method.state_dict(), "epoch": epoch, "config": config, "precision": precision,
            "noise_states": noise_states, "noise_kind": method.noise_kind()}


def train_checkpoint(checkpoint: ray.train.Checkpoint) -> TrialCheckpoint:
    """Ray Train's checkpoint as the run folder's (its path on its own filesystem)."""
    return TrialCheckpoint(checkpoint.path, checkpoint.filesystem)


def finish_epoch(method: Method, world: int, device: torch.device, evaluate_epoch: Callable[[], dict],
                 save_and_report: Callable[[dict, list], None]) -> None:
    """The end of a trained epoch on every rank, in the order that keeps a long evaluation out of any
    process-group collective: every rank's noise state is gathered first (the epoch's last collective), then
    rank 0 evaluates (``evaluate_epoch()`` -> the report's metrics; at once on other ranks, which then wait
    in ray.train.report's barrier, with no timeout), then the checkpoint and the report
    (``save_and_report(metrics, noise_states)``)."""
    noise_states = gather_noise_states(method.noise_state(), world, device)  # collective: every rank
    save_and_report(evaluate_epoch(), noise_states)


@dataclass(frozen=True)
class LoopConfig:
    """What the trial driver (harness/trial.py) gives every rank of its workers, as Ray Train's
    train_loop_config {"loop": LoopConfig}. The driver decides where the trial starts and what it keeps, for
    whatever scheduler; the worker does as it says."""

    experiment: dict  # the trial's resolved ExperimentConfig dict (saved in every checkpoint)
    trial_id: str
    run_dir: str  # absolute path or URI
    data: object  # ray.ObjectRef of the DatasetSplits
    reference: object  # ray.ObjectRef of the EvalReference
    threads: int | None = None  # torch threads per rank (None: torch's default)
    keep: dict[int, list[str]] = field(default_factory=dict)  # epoch -> folders its checkpoint is copied to
    # where the trial starts when Ray Train has no checkpoint of its run (Train's own come first):
    # {"checkpoint": folder, "noise_offset": added to every rank's noise seed, "why": for the log}
    start: dict | None = None
    changes: list[dict] = field(default_factory=list)  # what resumes changed (harness/resume.py), recorded once
    cluster: dict | None = None  # this invocation's ClusterConfig dict: what each epoch ran under
    code_version: str | None = None  # the driver's code, recorded with each epoch
    fault: str | None = None  # the drills' fault hook (reports/run_folder/faults.py); None in real runs


@dataclass
class WorkerRun:
    """What one rank of a trial holds while it trains: its place in the group, the method, the training split
    on its device, where the trial writes, and the latest evaluation's metrics (every report carries them)."""

    loop: LoopConfig  # what the trial driver passed
    config: ExperimentConfig
    rank: int
    world: int
    device: torch.device
    accel: Acceleration  # the training step's precision, memory format and compilation
    math_mode: str  # the training math's name (TF32 or not), recorded with every report
    data: object  # datasets.DatasetSplits
    reference: object  # harness.reference.EvalReference
    method: Method  # on ``device``
    capabilities: Capabilities  # what the method and the reference can compute (the evaluation plan's input)
    images: torch.Tensor  # [N, C, H, W] uint8: the training split, on the device where it fits (else the host)
    labels: torch.Tensor  # [N] int64, beside ``images``
    start_epoch: int  # the last epoch its checkpoint holds (0: a fresh start)
    # training FLOPs per image (models/flops.py), counted where sweep.objectives asks for train_flops: every
    # report then carries the training FLOPs so far, which multi-objective search weighs
    flops_per_image: float | None = None
    # the latest evaluation's metrics, NaN before the first: Tune insists that a scheduler's metric is in every
    # result. The plan evaluates the rungs ASHA decides at, so it never decides on a stale value
    latest: dict = field(default_factory=dict)

    @property
    def run_dir(self) -> str:
        return self.loop.run_dir

    @property
    def trial_id(self) -> str:
        return self.loop.trial_id

    @property
    def ran_under(self) -> dict:
        """What the epochs run under beyond the config: this invocation's cluster settings and code version."""
        return {"cluster": self.loop.cluster, "code_version": self.loop.code_version}

    def log(self, *args) -> None:
        """Rank 0's lines (the other ranks would repeat them)."""
        if self.rank == 0:
            print(*args)


def train_worker(loop_config: dict) -> None:
    """Ray Train entry point, on every rank. loop_config: {"loop": LoopConfig}."""
    run = start(loop_config["loop"])  # the method built, restored from its checkpoint, the split on its device
    if run.start_epoch >= run.config.train.epochs:
        return report_finished(run)
    watch = DivergenceWatch(run.config.train.diverge_after_steps, run.device)
    for epoch in range(run.start_epoch + 1, run.config.train.epochs + 1):
        metrics, diverged = train_epoch(run, epoch, watch)
        if run.rank == 0:  # the epoch's training figures, kept across restarts (Tune's own view starts afresh)
            storage.write_bytes(layout.history_file(run.run_dir, run.trial_id, epoch),
                                json.dumps({**metrics, **run.ran_under}).encode())
        if diverged:
            return stop_diverged(run, epoch, metrics, diverged)
        plan = trial_plan(run.config, epoch, run.capabilities)
        finish_epoch(run.method, run.world, run.device, lambda: evaluate_epoch(run, epoch, plan, metrics),
                     lambda report, noise_states: save_epoch(run, epoch, report, noise_states))
        faults.hit("epoch_end", trial=run.trial_id, epoch=epoch, rank=run.rank)


def start(loop: LoopConfig) -> WorkerRun:
    """This rank's start: the device and its math, the method built from the registry and restored from the
    trial's checkpoint (Ray Train's latest) or, where Train has none, from the one the driver names; the training
    split on the device; and, on rank 0, the trial folder cleared of what a killed group left."""
    faults.install(loop.fault)
    config = experiment_from_dict(loop.experiment)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if loop.threads:
        torch.set_num_threads(loop.threads)
    data = ray.get(loop.data)
    reference = ray.get(loop.reference)
    device = ray.train.torch.get_device()
    accel, math_mode = configure_device(device, config.train)
    method = build_method(config.method, config.model, data.spec(), device=device,
                          wrap=ray.train.torch.prepare_model, seed=config.train.seed, accel=accel)
    method.seed_noise(noise_seed(config.train.seed, rank))
    train_checkpoint_now = ray.train.get_checkpoint()
    start_epoch = restore(method, config, rank, world, train_checkpoint_now, loop.start)
    if rank == 0 and train_checkpoint_now is None and loop.start:  # a restart's first start: other weights,
        best.forget(loop.run_dir, loop.trial_id)  # other settings: its best so far is another lineage's
    images, labels, where = training_tensors(data.train, device, config.train.data_on_device_fraction)
    # the whole budget's steps, where a schedule that decays to the trial's end (cosine) ends
    method.set_training_length(config.train.epochs * steps_per_epoch(len(images), world, config.train.batch_size))
    flops = None
    if "train_flops" in config.sweep.objectives:
        from condgen_bench.models.flops import training_flops_per_image

        flops = training_flops_per_image(config.method, config.model, data.spec(), config.train.batch_size)
    run = WorkerRun(loop, config, rank, world, device, accel, math_mode, data, reference, method,
                    Capabilities.of(method, reference, data), images, labels, start_epoch,
                    latest={config.sweep.metric: math.nan}, flops_per_image=flops)
    run.log(f"training split in {where}; precision {accel.precision}, channels_last {accel.channels_last}, "
            f"compile {accel.compile}")
    if rank == 0:  # a divergence note from before a restart is stale: the epochs after the checkpoint run again
        storage.remove(layout.diverged_file(run.run_dir, run.trial_id))
        # a worker of this trial killed mid-write (a lost node, a paused trial that trained on) left its
        # temporary file; the group before this one is gone, so nothing of the trial is writing now
        for path in storage.remove_temporaries(layout.trial_dir(run.run_dir, run.trial_id)):
            print(f"rank 0: removed {path}, a temporary file a killed writer left")
        if start_epoch < config.train.epochs:  # the settings resumes changed: from which epoch
            resumes.record_trial_changes(run.run_dir, run.trial_id, loop.changes,
                                         start_epoch + 1)
    return run


def restore(method: Method, config: ExperimentConfig, rank: int, world: int, checkpoint: ray.train.Checkpoint | None,
            start: dict | None) -> int:
    """Load ``method``'s state from Ray Train's latest ``checkpoint`` of the trial, or, where Train has none
    yet and the driver names one (``start``), from ``start["checkpoint"]`` with every rank's noise seed moved
    by ``start["noise_offset"]``; returns the epoch the state ends (0: nothing to restore)."""
    log = print if rank == 0 else lambda *_: None
    if checkpoint is None and start:  # the weights the driver names, this trial's settings (set at every step)
        state = TrialCheckpoint(start["checkpoint"]).load_or_older(log=log)
        method.load_state_dict(state["method"])
        method.seed_noise(noise_seed(config.train.seed, rank) + start["noise_offset"])
        print(f"rank {rank}: starts from {start['checkpoint']} (epoch {state['epoch']}): {start['why']}")
        return state["epoch"]
    if checkpoint is None:
        return 0
    state = train_checkpoint(checkpoint).load_or_older(log=log)
    method.load_state_dict(state["method"])
    note = restore_noise(method, state.get("noise_states"), rank, world, config.train.seed, state["epoch"],
                         state.get("noise_kind"))
    print(f"rank {rank}: resumed from epoch {state['epoch']}; {note}")
    return state["epoch"]


def report_finished(run: WorkerRun) -> None:
    """A trial restored after its last epoch (a run killed before its results): nothing to train, but a
    search algorithm (Optuna) needs the trial's metric in its final result, so its last evaluation says it
    again."""
    folder = layout.epoch_dir(run.run_dir, run.trial_id, run.start_epoch)
    if EvalRecord.exists(folder):
        run.latest.update(EvalRecord.read(folder, arrays=False).metrics)
    ray.train.report({**run.latest, "epoch": run.start_epoch, "resumed_from_epoch": run.start_epoch,
                      "evaluated": False})


def train_epoch(run: WorkerRun, epoch: int, watch: DivergenceWatch) -> tuple[dict, str | None]:
    """Train this rank's shard of ``epoch`` (batches of ``train.batch_size`` [B, C, H, W] uint8 images from
    ``run.images``), reading the step statistics every ``train.sync_every`` steps, when every rank reads the
    divergence verdict at the same step. Returns the epoch's report metrics (the loss, the method's other step
    statistics, the rate) and the divergence reason, None while training is sound."""
    config, t0 = run.config, time.time()
    stats, diverged = StepStats(run.device), None
    batches = epoch_batches(len(run.images), epoch, run.rank, run.world, config.train.batch_size, config.train.seed,
                            device=run.images.device)
    for i, idx in enumerate(batches, start=1):
        faults.hit("step", trial=run.trial_id, epoch=epoch, rank=run.rank, step=i)
        out = run.method.train_step(run.images[idx], run.labels[idx])  # a compile failure raises CompileError here
        stats.add(out)
        watch.observe(out, run.method.step)
        if i % config.train.sync_every == 0:
            diverged = watch.verdict(run.world)  # every rank reads at the same step: all stop together
            if diverged:
                break
    if not diverged and i % config.train.sync_every:  # the steps since the last read
        diverged = watch.verdict(run.world)
    means = stats.means(run.world)
    train_seconds = time.time() - t0
    return {
        "epoch": epoch,
        "step": run.method.step,
        "loss": means.pop("loss", math.nan),
        **{f"train/{key}": value for key, value in means.items()},  # the method's other step statistics
        "train_seconds": train_seconds,
        "images_per_second": stats.steps * config.train.batch_size * run.world / train_seconds,
        "train_precision": run.accel.precision,
        "train_math": run.math_mode,
        "device": device_name(run.device),  # the kind of device the rate was measured on (its peak, for the report)
        "resumed_from_epoch": run.start_epoch,  # 0 for a fresh start; > 0 after a restart from a checkpoint
        "evaluated": False,
        "diverged": bool(diverged),
        # the portable training cost so far: every rank's batches of every step, restarts included
        "train_images_seen": run.method.step * config.train.batch_size * run.world,
        **({"train_flops": run.method.step * config.train.batch_size * run.world * run.flops_per_image}
           if run.flops_per_image is not None else {}),
    }, diverged


def stop_diverged(run: WorkerRun, epoch: int, metrics: dict, reason: str) -> None:
    """A diverged trial is a result, not a crash: rank 0 says so (epoch, step, reason), no checkpoint of the
    broken weights is kept, and every rank reports and stops."""
    if run.rank == 0:
        record = {"epoch": epoch, "step": run.method.step, "reason": reason}
        storage.write_bytes(layout.diverged_file(run.run_dir, run.trial_id), json.dumps(record, indent=1).encode())
    ray.train.report({**run.latest, **metrics})


def evaluate_epoch(run: WorkerRun, epoch: int, plan, metrics: dict) -> dict:
    """Rank 0, where the evaluation plan says: score this epoch and write its record. Returns the epoch's
    report metrics ("evaluated" says whether they are fresh); at once on the other ranks."""
    if run.rank != 0 or not plan.stage:
        return {**run.latest, **metrics}
    # imported here: the evaluation's torch-fidelity (and torchvision) take ~1.3 s to import, which every
    # process that unpickles train_worker (the trial's driver, Ray Train's controller, ranks > 0) skips
    from condgen_bench.harness.evaluation.scoring import evaluate

    record, grid_png = evaluate(run.method, run.data, run.reference, run.config.eval, plan, device=run.device)
    record.update(epoch=epoch, step=run.method.step, trial_id=run.trial_id, sampling_setting="default",
                  code_version=run.ran_under["code_version"])
    record["protocol"].update(train_precision=run.accel.precision, train_math=run.math_mode)
    EvalRecord.of(record, grid_png).write(layout.epoch_dir(run.run_dir, run.trial_id, epoch))
    run.latest = dict(record["metrics"])  # NaN where a metric is missing (its reason is in eval.json)
    return {**run.latest, **metrics, "evaluated": True}


def save_epoch(run: WorkerRun, epoch: int, report: dict, noise_states: list) -> None:
    """Every rank reports ``report``; rank 0 with the epoch's checkpoint (the method's state and every rank's
    noise state), copied beside Ray Train's (which rotate) into the folders the driver keeps for this epoch,
    and, at an evaluated epoch among the trial's best by the sweep metric, into its best (harness/best.py)."""
    with tempfile.TemporaryDirectory() as directory:
        if run.rank == 0:
            saved = TrialCheckpoint(directory)
            saved.save(checkpoint_state(run.method, run.loop.experiment, epoch, run.accel.precision,
                                        noise_states))
            for folder in run.loop.keep.get(epoch, []):
                saved.copy_to(folder)
            if report.get("evaluated"):  # among the trial's best evaluated epochs? (harness/best.py)
                sweep = run.config.sweep
                best.record_epoch(run.run_dir, run.trial_id, epoch, float(report.get(sweep.metric, math.nan)),
                                  sweep.metric, sweep.mode, run.config.eval.keep_best, saved, run.config.train.budgets)
        ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(directory) if run.rank == 0 else None)
