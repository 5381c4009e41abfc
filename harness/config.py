"""The experiment config: one typed dataclass per component, nested into ExperimentConfig.

Experiment scripts state only what differs from these defaults. The resolved config travels to
every Ray process as a plain dict (``to_dict``) and is rebuilt there (``experiment_from_dict``);
every checkpoint and every results row carries it and its hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from condgen_bench.datasets import DataConfig
from condgen_bench.models import get_method
from condgen_bench.harness.search import check_space, parse
from condgen_bench.models.accel import PRECISIONS
from condgen_bench.models.classifier import ClassifierConfig


@dataclass
class TrainConfig:
    epochs: int = 10  # passes over the training split (each worker sees 1/num_workers of it)
    batch_size: int = 64  # images per worker per step
    seed: int = 0  # model init and data order; worker r uses seed + r for its noise
    eval_every: int = 0  # evaluate every k epochs as well as at the end (0: only at the end)
    eval_epochs: list[int] = field(default_factory=list)  # further epochs to evaluate (the sweep adds ASHA's rungs)
    keep_checkpoints: int = 2  # checkpoints kept per trial (the latest are kept)
    # smaller epoch budgets this trial also stands for (set by the sweep when it reads swept budgets off one
    # run, harness/budgets.py): each one's last epoch gets a final evaluation and a kept checkpoint
    budgets: list[int] = field(default_factory=list)
    # a trial ends as "diverged" when its discriminator wins completely on this many steps in a row
    # (GANs; 0: never); a non-finite loss always ends it
    diverge_after_steps: int = 300
    # numeric precision of the training step (models/accel.py): "auto" (bf16 on a GPU, fp32 on a CPU),
    # "fp32", "bf16" (autocast, no loss scaling) or "fp16" (autocast and a GradScaler); the evaluation
    # samples in fp32 whatever the training precision
    precision: str = "auto"
    tf32: bool = True  # TF32 matmuls and convolutions on GPUs that have them (no effect on CPUs)
    channels_last: bool = False  # networks and image batches in NHWC memory order
    compile: bool = False  # torch.compile the trained network (DDPM's UNet, a GAN's generator)
    # steps between reads of the step statistics on the host (the divergence rules and, on several
    # workers, the one collective that stops every rank together); epochs end with a read too
    sync_every: int = 50
    # the whole training split on the worker's device (batches indexed there) when it takes at most
    # this fraction of the device's free memory; else batches are copied from host memory (CPUs: always host)
    data_on_device_fraction: float = 0.25

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown train.precision {self.precision!r}; valid: {list(PRECISIONS)}")
        if self.sync_every < 1:
            raise ValueError(f"train.sync_every must be >= 1, got {self.sync_every}")


@dataclass
class EvalConfig:
    """What the evaluation computes at each stage (harness/evaluation/plan.py): "tracking" at the evaluation epochs and
    ASHA's rungs, "trial_final" at each trial's last epoch, "finalist" after the sweep on the best trials."""

    samples_per_class: int = 32  # generated images per class at the tracking and trial-final stages
    seed: int = 12345  # sample i of a stage's evaluation set uses noise seed seed + i
    # after the sweep, the best `finalists` trials of each experiment (by the sweep metric; diverged and
    # errored trials excluded) are re-loaded from their best evaluated checkpoints and scored with the full suite on
    # final_samples_per_class images a class: Inception, CAS, augmentation gain, intra-class FID, the
    # sampling sweep (0: no finalist stage)
    finalists: int = 1
    # each trial keeps copies of the checkpoints of its best keep_best evaluated epochs by the sweep metric
    # (harness/best.py), and a finalist is scored at its best (0: at its last epoch, as Ray Train keeps it)
    keep_best: int = 1
    final_samples_per_class: int = 100
    batch_size: int = 256  # images per network call when sampling and extracting features
    grid_per_class: int = 8  # samples per class shown in the report's grid
    bpd_images: int = 128  # real test images for bits/dim (0: skip)
    # None: the full bound, every one of the T terms (T network calls per image); K: the prior and decoder
    # terms exact and the T-1 KL terms by stratified Monte Carlo with K draws (cheaper, unbiased, noisier)
    bpd_t_samples: int | None = None
    # "final": the bound at each trial's last epoch and for the finalists; "every": at every evaluation
    bpd_at: str = "final"
    # Sampler settings evaluated on each finalist's checkpoint besides the model's own, each its own
    # results row: a grid over the method's sampler axes (its sampler_axes: DDPM "sampler", "steps", "eta",
    # "guidance"; GANs none), e.g. {"steps": [5, 10, 25, 50], "guidance": [1.0, 3.0]}; an axis left out
    # keeps the model's setting.
    sampling_sweep: dict[str, list] = field(default_factory=dict)
    kid_subset_size: int = 1000  # capped at half of the generated or the real set (harness/fidelity.kid_subset)
    kid_subsets: int = 100
    isc_splits: int = 10  # capped at the number of samples
    prc_neighborhood: int = 3  # k of precision / recall's k-NN balls (torch-fidelity's default)
    bootstrap: int = 100  # resamples of the generated samples for the spread of accuracy and FID (0: none)
    # finalists: each sample's nearest training image (domain features and pixels), the share of samples
    # closer to one than training images are to each other (their 5th percentile), and a gallery of the
    # closest pairs in the report (harness/evaluation/diversity.py)
    memorization: bool = True
    # Inception FID / KID / IS / precision-recall: torch-fidelity's inception-v3-compat with this weights file
    # (None: the torch hub cache), else the offline TorchScript network of the [fid] extra; else missing
    inception_weights: str | None = None
    inception_download: bool = False  # let torch-fidelity download its Inception weights when not found
    # more feature spaces, each a TorchScript network file: {name: path} or {name: {"path", "size", "mean",
    # "std", "rgb"}} (harness/evaluation/extractors.py file_extractor), e.g. {"dinov2": "/path/dinov2_vits14.pt"} gives
    # fid_dinov2, kid_dinov2, ...; computed at the stages the Inception metrics are (eval.inception_at)
    extractors: dict[str, Any] = field(default_factory=dict)
    # Inception metrics at "every" evaluation, at each trial's "final" epoch and the finalists, at the
    # "finalists" only, or "never"
    inception_at: str = "final"
    # classification accuracy score (CAS), finalists: a fresh classifier (eval.classifier's recipe) trained
    # on generated images only, as many per class as the real training split has up to cas_pool_per_class
    # (the cap keeps its cost apart from the training split's size); tested on the real test split
    cas: bool = True
    cas_pool_per_class: int = 200
    # CAS classifiers trained on the same pool from this many seeds: CAS is their mean accuracy, and its
    # spread carries their training randomness beside the test images' (one seed: the test images' only)
    cas_seeds: int = 3
    # augmentation gain, finalists: a classifier on K real images a class vs on those plus
    # augment_synthetic_per_class generated ones, both tested on the real test split, over augment_seeds
    # seeds. K: the dataset's shots_per_class in few-shot runs, else augment_shots (drawn per seed)
    augment: bool = True
    augment_shots: int = 10
    augment_synthetic_per_class: int = 100
    augment_seeds: int = 3
    augment_steps: int = 100  # optimizer steps of each classifier (the same for both arms)
    # the augmentation study, finalists of a few-shot run (harness/evaluation/augment_study.py): classifiers on
    # the generator's K-shot set alone, plus augment_study_ratios generated images per real one, and on
    # generated images only, without and with ordinary augmentation (flips where augment_study_flip, and
    # brightness / contrast jitter), the generated images chosen by each of augment_study_selections;
    # augment_seeds seeds and augment_steps steps each
    augment_study: bool = False
    augment_study_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 5.0])
    augment_study_selections: list[str] = field(default_factory=lambda: ["uniform", "confident", "novel"])
    # "confident" keeps the top augment_study_keep of a class's pool (the pool is 1 / keep times the need)
    augment_study_keep: float = 0.5
    augment_study_flip: bool = True  # False for data whose mirror image is another class (digits, text)
    augment_study_jitter: float = 0.1
    # the augmentation study's classifiers as Ray tasks of 1 CPU each where Ray is up and the scoring runs on
    # the CPU, as many at once as free CPUs allow (2 on 2 cores: 1.3x faster than one 2-thread process, once
    # the tasks' processes have started); False: one after another in the process
    classifier_tasks: bool = True
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)

    def __post_init__(self):
        if self.bpd_at not in ("final", "every"):
            raise ValueError(f"unknown eval.bpd_at {self.bpd_at!r}; valid: ['every', 'final']")
        if self.inception_at not in ("every", "final", "finalists", "never"):
            raise ValueError(f"unknown eval.inception_at {self.inception_at!r}; "
                             "valid: ['every', 'final', 'finalists', 'never']")
        if self.augment_study:
            from condgen_bench.harness.evaluation.augment_study import StudyConfig
            StudyConfig.of(self)  # its checks, naming the setting
            if not 0 < self.augment_study_keep <= 1:
                raise ValueError("eval.augment_study_keep must be in (0, 1]")
        if self.augment and (self.augment_seeds < 1 or self.augment_shots < 1):
            raise ValueError("eval.augment_seeds and eval.augment_shots must be >= 1")
        if self.keep_best < 0:
            raise ValueError("eval.keep_best must be >= 0 (0: judge each trial at its last epoch)")
        if self.finalists < 0 or self.final_samples_per_class < 1 or self.samples_per_class < 1:
            raise ValueError("eval.finalists must be >= 0, eval.samples_per_class and "
                             "eval.final_samples_per_class >= 1")
        if self.cas and self.cas_pool_per_class < 1:
            raise ValueError("eval.cas_pool_per_class must be >= 1")


# sweep.scheduler -> "module:class" of its harness/schedulers.py interface, imported where it is used
SCHEDULERS = {"fifo": "condgen_bench.harness.schedulers:SweepScheduler",
              "asha": "condgen_bench.harness.schedulers:ASHA",
              "pbt": "condgen_bench.harness.pbt:PBT"}


def check_pbt(sweep) -> None:
    """PBT's own settings; it trains the whole population to one budget and mutates the points itself."""
    if "train.epochs" in sweep.space:
        raise ValueError("sweep.scheduler pbt trains every trial of the population to train.epochs: do not sweep "
                         "train.epochs with it")
    if sweep.search == "optuna":
        raise ValueError("sweep.scheduler pbt perturbs the points itself: use sweep.search grid or random")
    if sweep.perturbation_interval < 1 or not 0 < sweep.pbt_quantile <= 0.5:
        raise ValueError("sweep.perturbation_interval must be >= 1 and 0 < sweep.pbt_quantile <= 0.5")
    for path, value in sweep.pbt_mutations.items():
        parse(value, f"sweep.pbt_mutations.{path}")


@dataclass
class SweepConfig:
    # The search space over dotted config paths: a list of values each, or (random / optuna search) a
    # distribution: {"model.lr": "loguniform(1e-4, 1e-2)", "train.epochs": [2, 13]} (harness/search.py)
    space: dict[str, list | str] = field(default_factory=dict)
    search: str = "grid"  # "grid" (every combination), "random" or "optuna" (num_samples points drawn)
    search_seed: int = 0  # seeds the random and Optuna draws
    # grid: repeats of every point, each with its own train.seed (seed, seed + 1, ...); random / optuna:
    # the number of points drawn
    num_samples: int = 1
    # "fifo" (every trial runs its epochs), "asha" (stop poor trials early) or "pbt" (population-based
    # training: the trials train together, the worse copying the better's weights; harness/pbt.py)
    scheduler: str = "fifo"
    metric: str = "sample_accuracy"  # what ASHA and "best trial" use
    mode: str = "max"  # "max" or "min" for the metric
    # several objectives at once, {metric: "max" or "min"} with the sweep metric among them, e.g.
    # {"sample_accuracy": "max", "train_flops": "min"}: Optuna searches them together (multi-objective), and
    # every search records their Pareto front and takes its finalists from it (harness/front.py); {}: one
    objectives: dict[str, str] = field(default_factory=dict)
    grace_period: int = 1  # ASHA: epochs before a trial can be stopped
    reduction_factor: int = 2  # ASHA: keep the top 1/reduction_factor at each rung
    # trials running at once; None: locally 1, on a cluster as many as its CPUs and GPUs hold (one trial:
    # its driver and workers_per_trial workers; harness/sweep.py concurrency)
    max_concurrent_trials: int | None = None
    # swept train.epochs that differ only in the budget run as one trial to the largest, the smaller ones
    # read off it, where training does not depend on the budget (harness/budgets.py)
    fold_budgets: bool = True
    # PBT: every perturbation_interval epochs the trials in the bottom quantile (pbt_quantile of the
    # population) take the weights of one in the top and perturb the settings of pbt_mutations ({path: list
    # or distribution}, as sweep.space; {}: the family's learning rates, and FastGAN's DiffAugment policy)
    perturbation_interval: int = 2
    pbt_quantile: float = 0.25
    pbt_mutations: dict[str, list | str] = field(default_factory=dict)

    def __post_init__(self):
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {self.scheduler!r}; valid: {sorted(SCHEDULERS)}")
        if self.scheduler == "pbt":
            check_pbt(self)
        if self.mode not in ("max", "min"):
            raise ValueError(f"unknown mode {self.mode!r}; valid: ['max', 'min']")
        if self.objectives:
            check_objectives(self)
        check_space(self.space, self.search)
        if (self.num_samples < 1 or (self.max_concurrent_trials is not None and self.max_concurrent_trials < 1)
                or self.grace_period < 1 or self.reduction_factor < 2):
            raise ValueError("sweep.num_samples, max_concurrent_trials and grace_period must be >= 1, "
                             "reduction_factor >= 2")


def check_objectives(sweep: SweepConfig) -> None:
    """sweep.objectives: two or more metrics with a mode each, the sweep metric among them (with its mode),
    under a scheduler that runs every trial to its end (ASHA and PBT rank trials on one metric)."""
    bad = {m: d for m, d in sweep.objectives.items() if d not in ("max", "min")}
    if bad:
        raise ValueError(f"sweep.objectives {bad}: each metric needs 'max' or 'min'")
    if len(sweep.objectives) < 2:
        raise ValueError("sweep.objectives needs two or more metrics (one is sweep.metric and sweep.mode)")
    if sweep.objectives.get(sweep.metric) != sweep.mode:
        raise ValueError(f"sweep.objectives {sweep.objectives} must hold the sweep metric with its mode "
                         f"({sweep.metric!r}: {sweep.mode!r}): it ranks the trials' checkpoints (eval.keep_best)")
    if sweep.scheduler != "fifo":
        raise ValueError(f"sweep.scheduler {sweep.scheduler!r} ranks trials on one metric and cannot weigh several "
                         f"objectives {sorted(sweep.objectives)}: use sweep.scheduler fifo with sweep.objectives")


@dataclass
class ClusterConfig:
    address: str | None = None  # Ray address ("auto" joins a running cluster); None starts a local Ray
    storage_path: str | None = None  # where runs live: a local path or s3:// / gs:// (default ./runs)
    # the evaluation reference's cache (classifier, real features), shared by runs: a local path or URI
    # (None: <storage_path>/cache)
    cache_dir: str | None = None
    workers_per_trial: int = 1  # Ray Train workers (DDP ranks) per trial
    cpus_per_worker: float | None = None  # logical CPUs per worker (None: local: share the machine; cluster: 1)
    gpus_per_worker: float = 0.0  # GPUs per worker (0: train on CPU)
    threads_per_worker: int | None = None  # torch threads in a worker (None: cpus_per_worker rounded, >= 1)
    cpus_per_trial_driver: float = 0.25  # the per-trial process that runs TorchTrainer.fit()
    # further Ray resources each worker asks for, e.g. {"spot": 0.01} to place workers on the nodes that
    # declare that custom resource (`ray start --resources='{"spot": 4}'`); {}: none
    worker_resources: dict[str, float] = field(default_factory=dict)
    # further Ray resources each trial's driver asks for (and with it Ray Train's controller, which runs on the
    # driver's node), e.g. {"head": 0.01} to keep drivers off the nodes that may be lost (spot GPU nodes),
    # whose loss would otherwise end the trial (retried by Tune) instead of restarting its workers; {}: none
    driver_resources: dict[str, float] = field(default_factory=dict)
    # restarts of a trial (Tune) and of its workers (Ray Train) after a worker or node failure; None: 3 on a
    # cluster (--address), 0 locally, where a crash is usually a bug to see at once
    max_failures: int | None = None
    num_cpus: int | None = None  # local Ray only: CPUs to give it (None: all)

    def __post_init__(self):
        g = self.gpus_per_worker
        if g < 0 or (g > 1 and g != int(g)):
            raise ValueError(f"cluster.gpus_per_worker must be 0, a fraction of one GPU (0.25: four workers share "
                             f"one) or a whole number of GPUs, got {g}")


@dataclass
class ReportConfig:
    """How the report reads the run (reports/): nothing here changes a trial."""

    # training FLOPs of the leaderboard's equal-compute view (reports/pareto.py); None: the smallest
    # family's largest (the most that every family trained with)
    compute_budget: float | None = None


@dataclass
class ExperimentConfig:
    name: str = "ddpm"  # the run directory is <storage_path>/<name>
    method: str = "ddpm"  # models registry name
    model: Any = None  # the method's own config dataclass (resolved from the registry)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def __post_init__(self):
        config_cls = get_method(self.method).config_cls
        if self.model is None:
            self.model = config_cls()
        elif isinstance(self.model, dict):
            self.model = from_dict(config_cls, self.model, "model.")


def from_dict(cls, values: dict, path: str = ""):
    """Build dataclass ``cls`` from a (possibly partial, possibly nested) dict, each value checked against
    its declared type (``_typed``); unknown keys fail. ``path``: the dotted prefix of ``cls`` in the whole
    config, for the messages (e.g. "train.")."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(path + k for k in unknown)}; valid: {sorted(names)}")
    kwargs = {key: _typed(hints[key], value, path + key) for key, value in values.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as error:  # a check of the dataclass itself: say where it sits
        if path and not str(error).startswith(path):
            raise type(error)(f"{path.rstrip('.')}: {error}") from None
        raise


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) if isinstance(hint, type) else str(hint).replace("typing.", "")


def _typed(hint, value, path: str):
    """``value`` as the declared type ``hint``, from JSON-ish input (a dict for a nested dataclass, a list for a
    tuple, an int where a float is declared); raises TypeError naming the key, the value and the type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, dict):
            return from_dict(hint, value, path + ".")
    elif origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                try:
                    return _typed(arg, value, path)
                except TypeError:
                    continue
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin in (tuple, list):
        if isinstance(value, (list, tuple)):
            item = args[0] if args else Any  # tuple[int, ...], list[str]
            items = [_typed(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
    elif origin is dict:
        if isinstance(value, dict):
            key_type, value_type = args or (Any, Any)
            return {_typed(key_type, k, path): _typed(value_type, v, f"{path}.{k}") for k, v in value.items()}
    else:
        return value  # a type this check does not cover: as given
    raise TypeError(f"{path}: expected {_type_name(hint)}, got {value!r} ({type(value).__name__})")


def to_dict(config) -> dict:
    """A dataclass tree as plain JSON-able dicts (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def experiment_from_dict(values: dict) -> ExperimentConfig:
    """Rebuild an ExperimentConfig from ``to_dict`` output (the model section by the method's registry entry)."""
    values = dict(values)
    if "augment_study_tasks" in (values.get("eval") or {}):  # its name before it covered CAS and the gain too
        values["eval"] = {("classifier_tasks" if k == "augment_study_tasks" else k): v for k, v in values["eval"].items()}
    method = values.get("method", "ddpm")
    model = values.pop("model", None)
    config = from_dict(ExperimentConfig, values)
    if model is not None:
        config.model = from_dict(get_method(method).config_cls, model, "model.")
    return config


def config_hash(config: ExperimentConfig | dict) -> str:
    """Stable 12-hex hash of everything that defines a trial's training and evaluation (not the cluster,
    the sweep or the report)."""
    values = to_dict(config) if not isinstance(config, dict) else dict(config)
    values = {k: v for k, v in values.items() if k not in ("cluster", "sweep", "name", "report")}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


def flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    out = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def set_path(values: dict, path: str, value) -> None:
    """Set a dotted path in a nested dict, failing on a path that does not exist."""
    keys = path.split(".")
    node = values
    for key in keys[:-1]:
        if not isinstance(node, dict) or key not in node:
            raise KeyError(f"no config field {path!r} (stopped at {key!r})")
        node = node[key]
    if not isinstance(node, dict) or keys[-1] not in node:
        valid = sorted(flatten(values)) if isinstance(values, dict) else []
        raise KeyError(f"no config field {path!r}; fields look like: {', '.join(valid[:8])}, ...")
    node[keys[-1]] = value


def apply_overrides(config: ExperimentConfig, overrides: dict[str, Any]) -> ExperimentConfig:
    """Return a copy of ``config`` with dotted-path overrides applied (validated by rebuilding)."""
    values = to_dict(config)
    for path, value in overrides.items():
        set_path(values, path, value)
    return experiment_from_dict(values)
