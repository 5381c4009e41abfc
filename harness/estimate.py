"""The wall time ``--dry-run`` prints for a local run: the sweep's work counted from its config, priced with
what the dry run measures on this machine (a training step at train.batch_size and the sampling cost of an
image, for each distinct network: ``measure``; slowed by LOCAL_RAY_SLOWDOWN, Ray's share of the cores) and
with the fixed costs the benchmarks measured on the 2-core reference machine (the constants below).

Counted per trial: Ray's start of a trial, epochs x steps x the step, each tracking and trial-final
evaluation's samples (and Inception features where the plan computes them); per run: the evaluation
reference, as on a first run (nothing cached); per finalist: its samples and the CAS pool's, Inception, and the
classifiers of CAS and the augmentation gain. Trials run max_concurrent_trials at a time. Under ASHA, the
figure where it keeps the best 1/reduction_factor of the trials at each rung, and the one where it stops
none; under a scheduler that restarts trials from others' weights, a lower bound (the restarts come on top).
The measurements are this machine's CPU: a run on a cluster or on GPUs gets no estimate.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from condgen_bench.harness.config import ExperimentConfig
from condgen_bench.harness.evaluation.augment_study import StudyConfig, study_arms
from condgen_bench.harness.evaluation.plan import Capabilities, finalist_plan, trial_plan
from condgen_bench.harness.schedulers import scheduler_of
from condgen_bench.harness.steps import steps_per_epoch
from condgen_bench.models.interface import Method

# benchmarks/trial_overhead.py: a Tune trial whose TorchTrainer (harness/trial.py's) runs an empty loop, 2 cores
# (Ray's processes start and import torch and Ray Train: the trial's driver, Train's controller, the worker;
# then the controller, polling every 0.2 s locally, sees the loop end): 14.3 s a trial over 3
TRIAL_START_SECONDS = 14.3
# A local run's training and evaluation run beside Ray's own processes on the same cores: the default DDPM
# sweep's epochs took 13.4-16.2 s (109 steps; its history.parquet, 2 cores) where its dry run times a step
# at 0.10 s alone (10.9 s an epoch)
LOCAL_RAY_SLOWDOWN = 1.3
# benchmarks/eval_costs.py, the default DDPM profile on 2 cores: 74.9 s of Inception for 700 finalist samples
INCEPTION_SECONDS_PER_IMAGE = 0.107
# the same table: one CAS classifier trained and tested (its pool's samples apart), as eval.cas_seeds
# was then 1; the default run's three took 25 s in one 2-thread process (2026-12-04)
CAS_CLASSIFIER_SECONDS = 6.4
# the same table: the augmentation gain's classifiers over its seeds, in the process; half of them its real-only
# arm (equal steps each), which the evaluation reference trains once a run, the other half each finalist's
AUGMENT_SECONDS = 25.8
# one study classifier (100 steps of 128 images, 24 px, width 16) in one 2-thread process: the FastGAN
# preset's 96 took 618 s as one-thread Ray tasks, two at once (2026-12-04, 2 cores), x STUDY_TASKS_SPEEDUP / 96
STUDY_CLASSIFIER_SECONDS = 8.4
# the study's classifiers as one-thread Ray tasks, two at once on 2 cores, against one 2-thread process:
# 12.2 s for two 100-step trainings at once against 7.8 s for one (benchmarks-style pair, this machine)
STUDY_TASKS_SPEEDUP = 1.3
BPD_SECONDS = 2.3  # the same table: bits/dim on 64 images x 32 timestep draws
# the same table: the reference's evaluation classifier, 10 epochs on 3,500 images in 94.7 - 74.9 (Inception
# features of the 700 test images) = ~20 s
CLASSIFIER_SECONDS_PER_IMAGE_EPOCH = 20 / 35_000


@dataclass(frozen=True)
class Costs:
    """What the dry run measured for one network on this machine."""

    step_seconds: float  # one training step at train.batch_size
    sample_seconds: float  # one generated image under the method's own sampler


def measure(method: Method, config: ExperimentConfig, channels: int, classes: int, repeats: int = 2) -> Costs:
    """Time ``repeats`` training steps of ``method`` (already built, one step taken) on train.batch_size
    random images after one more to warm up, and the sampling of a batch (up to 16 images), on this
    process's CPU threads."""
    size, batch = config.data.image_size, config.train.batch_size
    images = torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8)
    labels = torch.arange(batch) % classes
    method.train_step(images, labels)  # the first step at this batch size allocates
    t0 = time.perf_counter()
    for _ in range(repeats):
        method.train_step(images, labels)
    step = (time.perf_counter() - t0) / repeats
    count = min(config.eval.batch_size, 16)  # a batch as the evaluation samples them (per-call costs amortized)
    t0 = time.perf_counter()
    method.sample(torch.arange(count) % classes, torch.arange(count), batch_size=count)
    return Costs(step, (time.perf_counter() - t0) / count)


def class_count(config: ExperimentConfig) -> int:
    """The classes the run keeps (data.classes; all 7 emotions where it names none)."""
    return len(config.data.classes) if config.data.classes else 7


def training_images(config: ExperimentConfig) -> int | None:
    """The training split's size where the config says it (the synthetic faces), else None."""
    data = config.data
    if data.name != "synthetic_faces":
        return None
    classes = class_count(config)
    return data.shots_per_class * classes if data.shots_per_class else data.num_train * classes // 7


def trial_seconds(config: ExperimentConfig, costs: Costs, images: int, epochs: int | None = None) -> float:
    """One trial of ``config`` (a point of the space): its start, training and evaluations, to its whole
    budget or, where a scheduler stops it, to ``epochs``."""
    classes = class_count(config)
    epochs = config.train.epochs if epochs is None else epochs
    steps = steps_per_epoch(images, config.cluster.workers_per_trial, config.train.batch_size)
    seconds = TRIAL_START_SECONDS + epochs * steps * costs.step_seconds
    for epoch in range(1, epochs + 1):
        plan = trial_plan(config, epoch)
        if plan.stage:
            samples = plan.samples_per_class * classes
            seconds += samples * costs.sample_seconds
            seconds += samples * INCEPTION_SECONDS_PER_IMAGE * plan.computes("inception")
            seconds += BPD_SECONDS * plan.computes("bpd")
    return seconds


def asha_stops(config: ExperimentConfig, trials: int) -> list[int | None]:
    """The epoch at which ASHA would stop each of ``trials`` trials run in order (None: it runs its budget),
    if it keeps the best 1 / reduction_factor at each rung, and always the first trial (which no rung has
    anything to compare with yet)."""
    rungs = scheduler_of(config).decision_epochs(config)
    kept = [max(1, trials // config.sweep.reduction_factor ** (k + 1)) for k in range(len(rungs))]
    return [next((rung for rung, n in zip(rungs, kept) if i >= n), None) for i in range(trials)]


def finalist_seconds(config: ExperimentConfig, costs: Costs, images: int) -> float:
    """One finalist of ``config``: its samples (and the CAS pool's), Inception, CAS, the augmentation gain and
    study."""
    classes = class_count(config)
    plan = finalist_plan(config, Capabilities(few_shot=config.data.shots_per_class is not None))
    samples = plan.samples_per_class * classes
    pool = min(config.eval.cas_pool_per_class, images // classes) * classes if plan.computes("cas") else 0
    classifiers = (CAS_CLASSIFIER_SECONDS * config.eval.cas_seeds * plan.computes("cas")
                   + AUGMENT_SECONDS / 2 * plan.computes("augment"))  # its mixed arms
    return ((samples + pool) * costs.sample_seconds + samples * INCEPTION_SECONDS_PER_IMAGE * plan.computes("inception")
            + classifiers + BPD_SECONDS * plan.computes("bpd") + (study_seconds(config, costs) if plan.computes("augment_study") else 0))


def study_seconds(config: ExperimentConfig, costs: Costs) -> float:
    """The augmentation study of one finalist: its pool (augment_study.py study_of_method: 1 / keep times the
    largest arm's need a class) and every arm's classifiers, each seed, at augment_steps steps (as Ray tasks
    where eval.classifier_tasks: a local run counts as a CPU run under Ray)."""
    ev = config.eval
    study = StudyConfig.of(ev)
    pool = math.ceil(max(study.ratios) * config.data.shots_per_class / ev.augment_study_keep) * class_count(config)
    classifiers = len(study_arms(study)) * study.seeds / (STUDY_TASKS_SPEEDUP if ev.classifier_tasks else 1)
    return pool * costs.sample_seconds + classifiers * STUDY_CLASSIFIER_SECONDS * study.steps / 100


def reference_seconds(config: ExperimentConfig, images: int) -> float:
    """The run's evaluation reference, nothing cached: the classifier, the augmentation gain's real-only arm
    and the real test features."""
    tests = config.data.num_test * class_count(config) // 7
    inception = config.eval.inception_at != "never"
    return (CLASSIFIER_SECONDS_PER_IMAGE_EPOCH * images * config.eval.classifier.epochs
            + AUGMENT_SECONDS / 2 * config.eval.augment + tests * INCEPTION_SECONDS_PER_IMAGE * inception)


def describe(config: ExperimentConfig, trials: list[tuple[ExperimentConfig, Costs]]) -> str:
    """The estimate's line for --dry-run, or why there is none. trials: (config, measured costs) of each
    trial the sweep starts. The evaluation reference is counted as on a first run (nothing cached)."""
    if config.cluster.address or config.cluster.gpus_per_worker > 0:
        return "no wall-time estimate: the dry run measures this machine's CPU, not the cluster's or a GPU's"
    images = training_images(config)
    if images is None:
        return f"no wall-time estimate: the size of {config.data.name}'s training split is known once it loads"
    concurrent = config.sweep.max_concurrent_trials or 1
    low, high = min(c.step_seconds for _, c in trials), max(c.step_seconds for _, c in trials)
    step = f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f} to {high:.2f}"
    costs_note = (f"on this machine, nothing cached (a training step {step} s, a sample "
                  f"{max(c.sample_seconds for _, c in trials):.2g} s; harness/estimate.py)")
    # in the run, beside Ray's own processes
    priced = [(p, Costs(c.step_seconds * LOCAL_RAY_SLOWDOWN, c.sample_seconds * LOCAL_RAY_SLOWDOWN)) for p, c in trials]
    longest, costs = max(priced, key=lambda t: t[0].train.epochs)  # the finalists priced like the longest trial
    fixed = (reference_seconds(config, images)
             + min(config.eval.finalists, len(priced)) * finalist_seconds(longest, costs, images))
    every = fixed + sum(trial_seconds(p, c, images) for p, c in priced) / concurrent
    if config.sweep.scheduler == "asha":
        stops = asha_stops(config, len(priced))
        expected = fixed + sum(trial_seconds(p, c, images, stop) for (p, c), stop in zip(priced, stops)) / concurrent
        return (f"estimated wall time about {expected / 60:.1f} minutes if ASHA keeps the best "
                f"1/{config.sweep.reduction_factor} at each rung, at most {every / 60:.1f} if it stops none, "
                + costs_note)
    bound = "at least" if scheduler_of(config).restarts_trials else "about"  # restarts come on top
    return f"estimated wall time {bound} {every / 60:.1f} minutes " + costs_note
