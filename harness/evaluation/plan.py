"""What to evaluate, and when: one pure function that the worker and the finalist stage both ask.

An evaluation is spent where a decision needs it, so that its cost follows the decisions and not the
number of trials times the size of the training set:

| stage         | when                                         | what                                        |
|---------------|----------------------------------------------|---------------------------------------------|
| "tracking"    | a trial's evaluation epochs, ASHA's rungs    | samples, classifier accuracy (overall, per  |
|               | and PBT's perturbation epochs                | class), domain FID (raw and FID∞) / KID /   |
|               |                                              | IS / PR: what the sweep metric needs        |
| "trial_final" | each trial's last epoch, and the last of each | tracking + bits/dim + Inception metrics     |
|               | budget read off it (harness/budgets.py)      | (eval.inception_at "final" or "every")      |
| "finalist"    | after Tune, on the best eval.finalists       | the full suite on final_samples_per_class   |
|               | trials of each experiment (by the sweep      | samples a class: tracking + bits/dim +      |
|               | metric), from their last checkpoints         | Inception + CAS + augmentation gain +       |
|               |                                              | intra-class FID + the sampling sweep        |

Every trial at a stage is scored on the same seeded samples (sample i of a stage has noise seed
eval.seed + i and label i // samples_per_class), so figures at one stage compare across trials.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from condgen_bench.harness.config import ExperimentConfig
from condgen_bench.harness.search import extreme_values

STAGES = ("tracking", "trial_final", "finalist")
# The parts of an evaluation a plan switches. The samples, the classifier's accuracy on them and the
# domain metrics are in every evaluation; these are the optional parts.
PARTS = ("inception", "bpd", "cas", "augment", "intra_class_fid", "memorization")


@dataclass(frozen=True)
class EvalPlan:
    """What one evaluation computes. ``stage`` None: nothing is evaluated at this point."""

    stage: str | None
    samples_per_class: int = 0  # generated images per class that every metric is computed on
    sample_seed: int = 0  # sample i uses noise seed sample_seed + i
    skip: dict[str, str] = field(default_factory=dict)  # part (of PARTS) -> why it is not computed here
    # further sampler settings scored on the same checkpoint, each its own record (finalists only)
    sampling_sweep: dict[str, list] = field(default_factory=dict)

    @property
    def split(self) -> str:
        """The real split this evaluation compares with: "test" for the finalists, whose figures are the
        ones reported; "validation" at every earlier stage, whose figures decide (the sweep metric, ASHA's
        and PBT's choices, the finalists), so that no decision looks at the test split."""
        return "test" if self.stage == "finalist" else "validation"

    def computes(self, part: str) -> bool:
        """True if ``part`` (one of PARTS) is computed in this evaluation."""
        if part not in PARTS:
            raise ValueError(f"unknown evaluation part {part!r}; valid: {list(PARTS)}")
        return self.stage is not None and part not in self.skip


def max_epochs(config: ExperimentConfig) -> int:
    """The largest epoch budget of the experiment (its own, or the largest swept one)."""
    return max([config.train.epochs, *extreme_values(config.sweep.space.get("train.epochs", [config.train.epochs]))])


def asha_rungs(config: ExperimentConfig) -> list[int]:
    """The epochs at which ASHA compares trials: grace_period * reduction_factor^k below the largest
    budget ([] for other schedulers)."""
    if config.sweep.scheduler != "asha":
        return []
    rungs, epoch = [], config.sweep.grace_period
    while epoch < max_epochs(config):
        rungs.append(epoch)
        epoch *= config.sweep.reduction_factor
    return rungs


def is_pbt_epoch(config: ExperimentConfig, epoch: int) -> bool:
    """An epoch at which PBT ranks the population (every sweep.perturbation_interval-th but the trial's last:
    nothing would train after an exploit; harness/pbt.py)."""
    return (config.sweep.scheduler == "pbt" and epoch % config.sweep.perturbation_interval == 0
            and epoch < config.train.epochs)


def is_tracking_epoch(config: ExperimentConfig, epoch: int) -> bool:
    """Every eval_every-th epoch, the listed eval_epochs, and the epochs a scheduler decides at: ASHA's
    rungs, PBT's perturbations."""
    every = config.train.eval_every
    return ((every > 0 and epoch % every == 0) or epoch in config.train.eval_epochs or epoch in asha_rungs(config)
            or is_pbt_epoch(config, epoch))


def ends_a_budget(config: ExperimentConfig, epoch: int) -> bool:
    """Is ``epoch`` the last of the trial, or of a smaller budget read off it (train.budgets)?"""
    return epoch == config.train.epochs or epoch in config.train.budgets


def evaluation_plan(config: ExperimentConfig, epoch: int, is_final: bool, stage: str) -> EvalPlan:
    """What to compute for a checkpoint of ``config`` after ``epoch``.

    stage: "trial" (asked by the worker after every training epoch; ``is_final``: it is the trial's last)
    gives the "trial_final", "tracking" or an empty plan; "finalist" (asked after Tune, for one of the
    best trials' last checkpoint) gives the "finalist" plan.
    """
    ev = config.eval
    if stage == "finalist":
        skip = {}
        if ev.inception_at == "never":
            skip["inception"] = "disabled (eval.inception_at = never)"
        if ev.bpd_images == 0:
            skip["bpd"] = "disabled (eval.bpd_images = 0)"
        if not ev.cas:
            skip["cas"] = "disabled (eval.cas)"
        if not ev.augment:
            skip["augment"] = "disabled (eval.augment)"
        if not ev.memorization:
            skip["memorization"] = "disabled (eval.memorization)"
        return EvalPlan("finalist", ev.final_samples_per_class, ev.seed, skip, dict(ev.sampling_sweep))
    if stage != "trial":
        raise ValueError(f"unknown evaluation stage request {stage!r}; valid: ['trial', 'finalist']")
    if is_final:
        name = "trial_final"
    elif is_tracking_epoch(config, epoch):
        name = "tracking"
    else:
        return EvalPlan(None)
    finalists_only = "computed for the finalists only (eval.finalists)"
    skip = {part: finalists_only for part in ("cas", "augment", "intra_class_fid", "memorization")}
    if ev.inception_at == "never":
        skip["inception"] = "disabled (eval.inception_at = never)"
    elif ev.inception_at == "finalists":
        skip["inception"] = "computed for the finalists only (eval.inception_at)"
    elif ev.inception_at == "final" and name == "tracking":
        skip["inception"] = "computed at the final epoch only (eval.inception_at)"
    if ev.bpd_images == 0:
        skip["bpd"] = "disabled (eval.bpd_images = 0)"
    elif name == "tracking" and ev.bpd_at == "final":
        skip["bpd"] = "computed at the final epoch only (eval.bpd_at)"
    return EvalPlan(name, ev.samples_per_class, ev.seed, skip)


# which evaluation part computes a metric, by its name's start or end (the rest are in every evaluation)
_PART_OF = (("cas", "cas"), ("aug_", "augment"), ("fid_intra", "intra_class_fid"), ("memorized", "memorization"),
            ("train_distance", "memorization"), ("bpd", "bpd"))


def metric_part(metric: str, extractors=()) -> str | None:
    """The evaluation part (of PARTS) that computes ``metric``, or None for the figures every evaluation has
    (accuracy, the domain metrics). extractors: eval.extractors' names (their figures follow Inception's)."""
    base = metric.split(".", 1)[0].removesuffix("_std").removesuffix("_se")
    for start, part in _PART_OF:
        if base.startswith(start):
            return part
    if base.endswith("_inception") or any(base.endswith(f"_{name}") for name in extractors):
        return "inception"
    return None


def sweep_metric_problem(config: ExperimentConfig) -> str | None:
    """Why ``sweep.metric`` cannot decide the sweep (None where it can): it must be computed at the trial
    stages, on the validation split; a figure computed for the finalists only is on the test split, which
    no decision may look at."""
    metric = config.sweep.metric
    part = metric_part(metric, tuple(config.eval.extractors))
    plan = evaluation_plan(config, config.train.epochs, is_final=True, stage="trial")
    if part is None or part not in plan.skip:
        return None
    return (f"sweep.metric {metric} cannot decide the sweep: it is {plan.skip[part]}, so it would be read off the "
            "test split, which no decision may look at (the trial stages score on the validation split); choose "
            "one the trials compute, e.g. sample_accuracy, fid_domain, kid_domain or bpd")
