"""What to evaluate, and when: the one place that decides. ``trial_plan`` answers the worker after each
epoch, ``finalist_plan`` the finalist stage (and ``EvalPlan.under`` each sampling-sweep setting of a
finalist); both take what the method and the reference can compute (``Capabilities``), so every part not
computed says why here, and the scoring (scoring.py) computes exactly what its plan says.

An evaluation is spent where a decision needs it, so that its cost follows the decisions and not the
number of trials times the size of the training set:

| stage         | when                                         | what                                        |
|---------------|----------------------------------------------|---------------------------------------------|
| "tracking"    | a trial's evaluation epochs, and the epochs  | samples, classifier accuracy (overall, per  |
|               | its scheduler compares trials at             | class), domain FID (raw and FID∞) / KID /   |
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

from dataclasses import dataclass, field, replace

from condgen_bench.harness.config import ExperimentConfig
from condgen_bench.harness.schedulers import scheduler_of
from condgen_bench.models.interface import Method

STAGES = ("tracking", "trial_final", "finalist")  # every plan's stage is one of these (or None: nothing)
# The parts of an evaluation a plan switches. The samples, the classifier's accuracy on them and the
# domain metrics are in every evaluation; these are the optional parts.
PARTS = ("inception", "bpd", "cas", "augment", "augment_study", "intra_class_fid", "memorization")
OWN_SAMPLER_ONLY = "computed under the model's own sampler only"  # a sampling-sweep record's CAS and gain


@dataclass(frozen=True)
class Capabilities:
    """What the method and the evaluation reference can compute, beside what the config asks for."""

    likelihood: str | None = None  # why the method has no likelihood (None: it has one)
    inception: str | None = None  # why there is no Inception network here (None: there is)
    validation_split: bool = True  # False: the data has none, so the trial stages score on the test split
    few_shot: bool = False  # the training split is K images a class (data.shots_per_class): the study's pairing

    @classmethod
    def of(cls, method: Method, reference, data) -> Capabilities:
        """Those of ``method`` (models/interface.py Method), ``reference`` (reference.EvalReference) and
        ``data`` (datasets.DatasetSplits)."""
        return cls(None if method.has_likelihood else f"{method.name} has no likelihood",
                   (reference.inception_missing or "no Inception network") if reference.inception is None else None,
                   data.validation is not None, data.train_full is not None)


@dataclass(frozen=True)
class EvalPlan:
    """What one evaluation computes. ``stage`` None: nothing is evaluated at this point."""

    stage: str | None
    samples_per_class: int = 0  # generated images per class that every metric is computed on
    sample_seed: int = 0  # sample i uses noise seed sample_seed + i
    skip: dict[str, str] = field(default_factory=dict)  # part (of PARTS) -> why it is not computed here
    # further sampler settings scored on the same checkpoint, each its own record (finalists only)
    sampling_sweep: dict[str, list] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)  # the sampler's settings for this record ({}: the method's own)
    # where bits/dim comes from instead of being computed again on the same checkpoint: "trial_final" (that
    # record of the checkpoint, where it is on the same split), "own_sampler" (this checkpoint's record under
    # its own sampler: the bound does not depend on the sampler); None: computed here (or skipped)
    bpd_from: str | None = None
    # why eval.extractors' figures are not computed here (they follow Inception's stages, not its
    # availability on this machine); None: computed
    extractors_skip: str | None = None

    def __post_init__(self):
        if self.stage is not None and self.stage not in STAGES:
            raise ValueError(f"unknown evaluation stage {self.stage!r}; valid: {list(STAGES)}")

    @property
    def split(self) -> str:
        """The real split this evaluation compares with: "test" for the finalists, whose figures are the
        ones reported; "validation" at every earlier stage, whose figures decide (the sweep metric, the
        scheduler's choices, the finalists), so that no decision looks at the test split."""
        return "test" if self.stage == "finalist" else "validation"

    def computes(self, part: str) -> bool:
        """True if ``part`` (one of PARTS) is computed in this evaluation."""
        if part not in PARTS:
            raise ValueError(f"unknown evaluation part {part!r}; valid: {list(PARTS)}")
        return self.stage is not None and part not in self.skip

    def under(self, settings: dict) -> EvalPlan:
        """The plan of the same checkpoint's record under other sampler ``settings`` (a sampling-sweep
        setting): the same samples and parts, but CAS, the augmentation gain and study (the model's own
        sampler only) and the bound, taken from the record under the model's own sampler."""
        skip = {**self.skip, **{part: self.skip.get(part, OWN_SAMPLER_ONLY) for part in ("cas", "augment", "augment_study")}}
        return replace(self, skip=skip, sampling_sweep={}, settings=dict(settings),
                       bpd_from="own_sampler" if self.computes("bpd") else None)


def is_tracking_epoch(config: ExperimentConfig, epoch: int) -> bool:
    """Every eval_every-th epoch, the listed eval_epochs, and the epochs the sweep's scheduler compares the
    trials at (harness/schedulers.py decision_epochs)."""
    every = config.train.eval_every
    return ((every > 0 and epoch % every == 0) or epoch in config.train.eval_epochs
            or epoch in scheduler_of(config).decision_epochs(config))


def ends_a_budget(config: ExperimentConfig, epoch: int) -> bool:
    """Is ``epoch`` the last of the trial, or of a smaller budget read off it (train.budgets)?"""
    return epoch == config.train.epochs or epoch in config.train.budgets


def _inception_and_bpd(ev, stage: str, caps: Capabilities) -> tuple[dict[str, str], str | None]:
    """Why Inception and bits/dim are not computed at ``stage`` (of STAGES), where they are not: for
    bits/dim the method's side first (a family without a likelihood), then the config's; for Inception the
    config's, then the reference's (no Inception network on this machine). Returns ({part: reason}, why
    eval.extractors' figures are not computed: the config's Inception reason only, or None)."""
    skip = {}
    if caps.likelihood:
        skip["bpd"] = caps.likelihood
    elif ev.bpd_images == 0:
        skip["bpd"] = "disabled (eval.bpd_images = 0)"
    elif stage == "tracking" and ev.bpd_at == "final":
        skip["bpd"] = "computed at the final epoch only (eval.bpd_at)"
    if ev.inception_at == "never":
        skip["inception"] = "disabled (eval.inception_at = never)"
    elif ev.inception_at == "finalists" and stage != "finalist":
        skip["inception"] = "computed for the finalists only (eval.inception_at)"
    elif ev.inception_at == "final" and stage == "tracking":
        skip["inception"] = "computed at the final epoch only (eval.inception_at)"
    elif caps.inception:
        return {**skip, "inception": caps.inception}, None
    return skip, skip.get("inception")


def trial_plan(config: ExperimentConfig, epoch: int, caps: Capabilities = Capabilities()) -> EvalPlan:
    """What the worker computes after training ``epoch`` of a trial of ``config``: "trial_final" at the
    trial's last epoch and the last of each budget read off it (ends_a_budget), "tracking" at the epochs
    is_tracking_epoch names, else nothing (stage None). ``caps``: what the method and reference can do."""
    if ends_a_budget(config, epoch):
        stage = "trial_final"
    elif is_tracking_epoch(config, epoch):
        stage = "tracking"
    else:
        return EvalPlan(None)
    ev = config.eval
    finalists_only = "computed for the finalists only (eval.finalists)"
    skip = {part: finalists_only for part in ("cas", "augment", "augment_study", "intra_class_fid", "memorization")}
    config_skip, extractors = _inception_and_bpd(ev, stage, caps)
    skip.update(config_skip)
    return EvalPlan(stage, ev.samples_per_class, ev.seed, skip, extractors_skip=extractors)


def finalist_plan(config: ExperimentConfig, caps: Capabilities = Capabilities()) -> EvalPlan:
    """What the finalist stage computes on a finalist's last checkpoint: everything the config enables,
    on eval.final_samples_per_class samples a class, under the method's sampler and each setting of
    eval.sampling_sweep (EvalPlan.under). The bound is taken from the checkpoint's trial-final record where
    that one is on the test split too (a dataset without a validation split)."""
    ev = config.eval
    skip, extractors = _inception_and_bpd(ev, "finalist", caps)
    for part, enabled in (("cas", ev.cas), ("augment", ev.augment), ("augment_study", ev.augment_study),
                          ("memorization", ev.memorization)):
        if not enabled:
            skip[part] = f"disabled (eval.{part})"
    if "augment_study" not in skip and not caps.few_shot:
        skip["augment_study"] = ("the dataset is not few-shot (data.shots_per_class unset): the study's real arm "
                                 "must train on the generator's own K images a class")
    bpd_from = "trial_final" if "bpd" not in skip and not caps.validation_split else None
    return EvalPlan("finalist", ev.final_samples_per_class, ev.seed, skip, dict(ev.sampling_sweep), bpd_from=bpd_from,
                    extractors_skip=extractors)


# which evaluation part computes a metric, by its name's start or end (the rest are in every evaluation)
_PART_OF = (("cas", "cas"), ("aug_", "augment"), ("study_", "augment_study"), ("fid_intra", "intra_class_fid"), ("memorized", "memorization"),
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
    plan = trial_plan(config, config.train.epochs)
    if part is None or part not in plan.skip:
        return None
    return (f"sweep.metric {metric} cannot decide the sweep: it is {plan.skip[part]}, so it would be read off the "
            "test split, which no decision may look at (the trial stages score on the validation split); choose "
            "one the trials compute, e.g. sample_accuracy, fid_domain, kid_domain or bpd")
