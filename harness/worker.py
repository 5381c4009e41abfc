"""Layer 1 of 3: the Ray Train worker function, run on every DDP rank of a trial.

It knows nothing about the method's family: it builds the method from the registry, feeds it this
rank's shard of each epoch, reports the loss every epoch with a checkpoint, evaluates on rank 0 where
the evaluation plan (harness/plan.py) says, and resumes from the last checkpoint when Ray Train
restarts it. A trial whose
training diverges (a non-finite loss, a discriminator that wins completely for too long) is ended
with that reason recorded: a result of the sweep, not an error.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from harness.config import experiment_from_dict
from harness.evaluation import evaluate
from harness.plan import evaluation_plan
from harness.results import write_record
from models import build_method
from reports import layout, storage


def epoch_batches(num_images: int, epoch: int, rank: int, world: int, batch_size: int, seed: int):
    """This rank's batches of one epoch: a permutation shared by all ranks (seeded by seed and epoch),
    dealt round-robin, cut so that every rank takes the same number of steps. Yields index tensors [B]."""
    perm = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    shard = perm[rank::world]
    steps = (num_images // world) // batch_size
    if steps == 0:
        raise ValueError(f"{num_images} images cannot fill one batch of {batch_size} on each of {world} workers")
    for i in range(steps):
        yield shard[i * batch_size:(i + 1) * batch_size]


class StepStats:
    """Running sums of the floats ``train_step`` returns, per key (a key may be absent on some steps)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.steps = 0

    def add(self, out: dict[str, float]) -> None:
        self.steps += 1
        for key, value in out.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
            self.counts[key] = self.counts.get(key, 0) + 1

    def means(self) -> dict[str, float]:
        """Per-key means over the steps that reported the key."""
        return {key: total / self.counts[key] for key, total in sorted(self.sums.items())}


class DivergenceWatch:
    """Tells when training has diverged: a non-finite "loss" or "loss_*" on a step, or the discriminator
    winning completely ("d_wins" = 1) on ``patience`` steps in a row (0: never by that rule)."""

    def __init__(self, patience: int):
        self.patience = patience
        self.streak = 0

    def check(self, out: dict[str, float], step: int) -> str | None:
        """The reason training has diverged after this step's statistics, or None."""
        for key, value in out.items():
            if (key == "loss" or key.startswith("loss_")) and not math.isfinite(value):
                return f"{key} became {value} at step {step}"
        self.streak = self.streak + 1 if out.get("d_wins") else 0
        if self.patience and self.streak >= self.patience:
            return f"the discriminator won completely on {self.streak} steps in a row (to step {step})"
        return None


def _reason_on_any_rank(reason: str | None, world: int) -> str | None:
    """This rank's reason if any, "another worker diverged" if only another rank has one, else None: every
    rank stops at the same step (one collective a step; none on one worker)."""
    if world == 1:
        return reason
    flag = torch.tensor([1.0 if reason else 0.0])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return reason or ("another worker diverged" if flag.item() > 0 else None)


def _mean_across_ranks(value: float, world: int) -> float:
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return t.item() / world


def _save_checkpoint(method, config: dict, epoch: int, directory: str) -> None:
    torch.save({"method": method.state_dict(), "epoch": epoch, "config": config},
               os.path.join(directory, layout.CHECKPOINT_FILE))


def train_worker(loop_config: dict) -> None:
    """Ray Train entry point. loop_config: {"experiment": resolved config dict, "trial_id": str,
    "run_dir": absolute path or URI, "data": ObjectRef[DatasetSplits], "reference": ObjectRef[EvalReference]}."""
    config = experiment_from_dict(loop_config["experiment"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if loop_config.get("threads"):
        torch.set_num_threads(loop_config["threads"])
    data = ray.get(loop_config["data"])
    reference = ray.get(loop_config["reference"])
    device = ray.train.torch.get_device()

    method = build_method(config.method, config.model, data.spec(), device=device,
                          wrap=ray.train.torch.prepare_model, seed=config.train.seed)
    method.seed_noise(config.train.seed * 1000 + rank + 1)
    start_epoch = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state = torch.load(os.path.join(directory, layout.CHECKPOINT_FILE), map_location=device,
                               weights_only=False)
        method.load_state_dict(state["method"])
        start_epoch = state["epoch"]

    # Every report carries the latest evaluation's metrics (NaN before the first): Tune insists that a
    # scheduler's metric is in every result. The plan evaluates the rungs ASHA decides at, so it never
    # decides on a stale value; "evaluated" says which reports are fresh.
    trial_id = loop_config["trial_id"]
    latest = {config.sweep.metric: math.nan}
    watch = DivergenceWatch(config.train.diverge_after_steps)
    for epoch in range(start_epoch + 1, config.train.epochs + 1):
        t0 = time.time()
        stats = StepStats()
        diverged = None
        for idx in epoch_batches(len(data.train), epoch, rank, world, config.train.batch_size, config.train.seed):
            out = method.train_step(data.train.images[idx], data.train.labels[idx])
            stats.add(out)
            diverged = _reason_on_any_rank(watch.check(out, method.step), world)
            if diverged:
                break
        train_seconds = time.time() - t0
        means = {key: _mean_across_ranks(value, world) for key, value in stats.means().items()}
        metrics = {
            "epoch": epoch,
            "step": method.step,
            "loss": means.pop("loss", math.nan),
            **{f"train/{key}": value for key, value in means.items()},  # the method's other step statistics
            "train_seconds": train_seconds,
            "images_per_second": stats.steps * config.train.batch_size * world / train_seconds,
            "resumed_from_epoch": start_epoch,  # 0 for a fresh start; > 0 after a restart from a checkpoint
            "evaluated": False,
            "diverged": bool(diverged),
        }
        if diverged:  # a result, not a crash: say so, keep no checkpoint of the broken weights, stop
            if rank == 0:
                record = {"epoch": epoch, "step": method.step, "reason": diverged}
                storage.write_bytes(layout.diverged_file(loop_config["run_dir"], trial_id),
                                    json.dumps(record, indent=1).encode())
            ray.train.report({**latest, **metrics})
            return
        plan = evaluation_plan(config, epoch, is_final=epoch == config.train.epochs, stage="trial")
        if rank == 0 and plan.stage:
            record, grid_png = evaluate(method, data, reference, config.eval, plan, device=device)
            record.update(epoch=epoch, step=method.step, trial_id=trial_id, sampling_setting="default")
            write_record(layout.epoch_dir(loop_config["run_dir"], trial_id, epoch), record, grid_png)
            latest = dict(record["metrics"])  # NaN where a metric is missing (its reason is in eval.json)
            metrics["evaluated"] = True
        metrics = {**latest, **metrics}
        with tempfile.TemporaryDirectory() as directory:
            if rank == 0:
                _save_checkpoint(method, loop_config["experiment"], epoch, directory)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory) if rank == 0 else None)
