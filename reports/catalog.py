"""The metric catalog: every figure results.parquet holds, with its label, unit, direction, range, a short
definition and the column of its spread. The results writer checks its columns against it
(harness/results.py) and the report labels its tables and charts from it, so the two cannot drift: a new
metric without an entry is reported by ``uncatalogued`` (and fails the tests that write real results)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

# how a value is shown: "%" and "points" are stored as fractions and shown x 100
UNITS = ("%", "points", "", "bits/dim", "s", "s/image", "calls/image", "images/s", "GFLOP/image", "TFLOP/s", "FLOP",
         "images", "device-s")
DIRECTIONS = ("max", "min", "none")  # better when higher / lower; "none": descriptive (a reference, a part)
KINDS = ("quality", "reference", "cost")  # what it measures: the generator, the yardstick, the price


@dataclass(frozen=True)
class Metric:
    name: str  # the results column
    label: str  # what the report calls it
    unit: str  # one of UNITS
    direction: str  # one of DIRECTIONS
    definition: str  # one sentence, shown on hover
    kind: str = "quality"  # one of KINDS
    spread: str | None = None  # the column of its spread: what "±" shows and the noise tests use
    spread_kind: str = ""  # what that spread is, for the "±" legend ("bootstrap standard error", ...)
    part_spread: str | None = None  # the column of one part's std where the figure averages parts (IS's splits)
    low: float | None = None  # its range, where it has one (None: unbounded)
    high: float | str | None = None  # a number, or "classes" (IS: at most the number of classes)
    per_class: bool = False  # "<name>.<class>" columns hold it per class
    wall_clock: bool = False  # a time measured on the machine that ran it (not a property of the model)

    def __post_init__(self):
        if self.unit not in UNITS or self.direction not in DIRECTIONS or self.kind not in KINDS:
            raise ValueError(f"{self.name}: unit {self.unit!r}, direction {self.direction!r}, kind {self.kind!r}")

    @property
    def portable(self) -> bool:
        """A cost that is the same on any machine (FLOPs, images, network calls), not a wall-clock figure."""
        return self.kind == "cost" and not self.wall_clock

    @property
    def arrow(self) -> str:
        """↑ better when higher, ↓ better when lower, "" neither."""
        return {"max": "↑", "min": "↓"}.get(self.direction, "")

    def scaled(self, value: float) -> float:
        """The value in its display unit (fractions as percent or points)."""
        return value * 100 if self.unit in ("%", "points") else value


def _fidelity(kind: str, where: str) -> list[Metric]:
    """FID / FID∞ / KID / IS / precision / recall / density / coverage / Vendi in one extractor's features."""
    return [
        Metric(f"fid_{kind}", f"FID ({where})", "", "min", f"Fréchet distance between Gaussians fitted to real and "
               f"generated {where} features; 0 for identical statistics, biased upward at small sample sizes",
               spread=f"fid_{kind}_std", spread_kind="bootstrap standard error", low=0),
        Metric(f"fid_inf_{kind}", f"FID∞ ({where})", "", "min", "FID extrapolated to infinitely many samples "
               "from FIDs at N/10..N samples (Chong & Forsyth): comparable across sample counts only where N/10 is "
               "at least twice the feature dimension, and missing where it is not", low=0),
        Metric(f"kid_{kind}", f"KID ({where})", "", "min", f"squared MMD with a cubic polynomial kernel between "
               f"real and generated {where} features, averaged over subsets; unbiased at any sample size, so the "
               "figure to compare at small N, where FID's bias depends on N and FID∞ is out of its range",
               spread=f"kid_{kind}_std", spread_kind="std over KID's subsets (wider than a standard error)"),
        Metric(f"is_{kind}", f"IS ({where})", "", "max", f"Inception score with the {where} classifier's "
               "class probabilities: exp E KL(p(y|x) || p(y)); 1 for one blurred class, at most the number of "
               "classes", spread=f"is_{kind}_se", part_spread=f"is_{kind}_std",
               spread_kind="standard error over IS's splits (their std / √splits)", low=1, high="classes"),
        Metric(f"precision_{kind}", f"precision ({where})", "%", "max", "share of generated samples inside the "
               f"k-NN balls of the real {where} features (fidelity)", spread=f"precision_{kind}_std",
               spread_kind="standard error: binomial and between equal-size real subsets", low=0, high=1),
        Metric(f"recall_{kind}", f"recall ({where})", "%", "max", "share of real samples inside the k-NN balls "
               f"of the generated {where} features (diversity)", spread=f"recall_{kind}_std",
               spread_kind="standard error: binomial and between equal-size real subsets", low=0, high=1),
        Metric(f"density_{kind}", f"density ({where})", "", "max", "real k-NN balls holding each generated sample, "
               f"/ k, averaged (Naeem et al. 2020), in the {where} features: about 1 for a generator matching the "
               "data, robust to real outliers (fidelity)", spread=f"density_{kind}_std",
               spread_kind="standard error: per sample and between equal-size real subsets", low=0),
        Metric(f"coverage_{kind}", f"coverage ({where})", "%", "max", "share of real samples whose k-NN ball "
               f"holds a generated sample (Naeem et al. 2020), in the {where} features (diversity)",
               spread=f"coverage_{kind}_std", spread_kind="standard error: binomial and between equal-size real subsets", low=0, high=1),
        Metric(f"vendi_{kind}", f"Vendi ({where})", "", "max", "exp of the entropy of the eigenvalues of the "
               f"samples' cosine-similarity matrix / N in the {where} features (Friedman & Dieng 2023): the "
               "effective number of distinct samples, 1 for a collapsed generator; no reference set",
               spread=f"vendi_{kind}_std", spread_kind="half-sample standard error", low=1),
    ]


def _seconds(name: str, label: str, definition: str, unit: str = "s") -> Metric:
    return Metric(name, label, unit, "min", definition, kind="cost", low=0, wall_clock=True)


METRICS: dict[str, Metric] = {m.name: m for m in [
    Metric("sample_accuracy", "accuracy on samples", "%", "max", "share of generated samples that the "
           "evaluation classifier (trained on the real data) assigns to the class they were generated for",
           spread="sample_accuracy_std", spread_kind="bootstrap standard error", low=0, high=1, per_class=True),
    *_fidelity("domain", "domain classifier"),
    Metric("fid_intra_domain", "intra-class FID", "", "min", "FID between each class's generated and real test "
           "images in the domain features, averaged over classes", low=0, per_class=True),
    *_fidelity("inception", "Inception"),
    Metric("memorized_share", "memorized share", "%", "min", "share of the samples closer to a training image "
           "(domain features) than 95% of training images are to their nearest other one: copies of the training "
           "set, which FID rewards and augmentation cannot use", spread="memorized_share_std",
           spread_kind="binomial standard error over the samples", low=0, high=1),
    Metric("train_distance_domain", "distance to the training set (domain)", "", "none", "mean distance of each "
           "sample to its nearest training image in the domain features: 0 for copies",
           spread="train_distance_domain_std", spread_kind="standard error over the samples", low=0),
    Metric("train_distance_pixels", "distance to the training set (pixels)", "", "none", "mean root-mean-square "
           "pixel difference (0-255) of each sample to its nearest training image in pixels",
           spread="train_distance_pixels_std", spread_kind="standard error over the samples", low=0),
    Metric("memorized_threshold_domain", "training set's own 5% nearest distance", "", "none", "the 5th "
           "percentile of the training images' distances to their nearest other training image (domain "
           "features): the memorized share's threshold", kind="reference", low=0),
    Metric("bpd", "bits/dim", "bits/dim", "min", "negative log-likelihood of the real test images in bits per "
           "pixel and channel (DDPM: its variational bound; flow: the ODE likelihood); lower is better",
           spread="bpd_stderr", spread_kind="standard error over the real test images", low=0),
    Metric("bpd_prior", "bits/dim: prior part", "bits/dim", "none", "the prior term of bits/dim"),
    Metric("bpd_decoder", "bits/dim: decoder part", "bits/dim", "none", "DDPM's discretized decoder term"),
    Metric("bpd_kl", "bits/dim: KL part", "bits/dim", "none", "DDPM's sum of the per-step KL terms"),
    Metric("bpd_divergence", "bits/dim: divergence part", "bits/dim", "none",
           "the flow's volume change: minus the integrated divergence of its velocity"),
    Metric("cas", "CAS", "%", "max", "classification accuracy score: a classifier trained only on generated "
           "images, tested on the real test split; the mean of eval.cas_seeds classifiers", spread="cas_std",
           part_spread="cas_seed_std",
           spread_kind="standard error over the test images and the classifiers' seeds",
           low=0, high=1),
    Metric("aug_gain", "augmentation gain", "points", "max", "accuracy of a classifier trained on a few real "
           "images a class plus generated ones, minus trained on the real ones alone (points)",
           spread="aug_gain_se", part_spread="aug_gain_std", spread_kind="standard error over the seeds (their std / √seeds)", low=-1, high=1),
    Metric("aug_real_accuracy", "few-shot accuracy, real only", "%", "none", "the augmentation gain's baseline",
           kind="reference", spread="aug_real_accuracy_se", part_spread="aug_real_accuracy_std",
           spread_kind="standard error over the seeds (their std / √seeds)", low=0, high=1),
    Metric("aug_mixed_accuracy", "few-shot accuracy, real + generated", "%", "max",
           "the augmentation gain's classifier with generated images added", spread="aug_mixed_accuracy_se",
           part_spread="aug_mixed_accuracy_std", spread_kind="standard error over the seeds (their std / √seeds)", low=0, high=1),
    Metric("study_best_gain", "augmentation study: best gain", "points", "max", "the augmentation study's "
           "best setting (ratio of generated to real images, selection, classifier augmentation): its accuracy "
           "minus real-only's on the generator's own K-shot set, paired over seeds and test images",
           spread="study_best_gain_se", spread_kind="standard error over the seeds and the test images",
           low=-1, high=1),
    Metric("study_best_ratio", "augmentation study: best ratio", "", "none", "generated images per real image "
           "of the study's best setting", kind="reference", low=0),
    Metric("study_real_accuracy", "augmentation study: real only", "%", "none", "the augmentation study's "
           "baseline: the classifier on the generator's K-shot set alone", kind="reference",
           spread="study_real_accuracy_std", spread_kind="standard error over the seeds and the test images",
           low=0, high=1),
    Metric("classifier_real_accuracy", "classifier on real test images", "%", "none", "the evaluation "
           "classifier's accuracy on the real test split: the ceiling of accuracy on samples", kind="reference",
           spread="classifier_real_accuracy_std", spread_kind="binomial standard error over the test images",
           low=0, high=1, per_class=True),
    Metric("cas_real_accuracy", "CAS ceiling (real)", "%", "none", "the CAS recipe trained on as many real "
           "images: what CAS would be for a perfect generator", kind="reference", low=0, high=1),
    Metric("nonfinite_samples", "non-finite samples", "", "min", "generated images with a NaN or infinite value "
           "(a diverged sampler): each counts as a miss in the accuracy on samples", low=0),
    Metric("network_evaluations", "network calls per image", "calls/image", "min", "network evaluations per "
           "generated image under the sampler setting (guidance counts twice): the portable sampling cost",
           kind="cost", low=1),
    _seconds("sample_seconds_per_image", "sampling time per image", "wall-clock seconds per generated image, "
             "batched, on the machine that ran the evaluation", unit="s/image"),
    _seconds("train_seconds", "training time", "wall-clock seconds of training up to this epoch"),
    Metric("train_gflops_per_image", "training GFLOPs per image", "GFLOP/image", "min", "FLOPs of the matrix "
           "products, convolutions and attention one training image costs, every forward and backward pass of a "
           "step counted as it runs on a meta-device copy of the method (models/flops.py): portable across "
           "machines", kind="cost", low=0),
    Metric("train_images_seen", "training images seen", "images", "min", "images trained on up to this epoch, "
           "over all workers (images per second x seconds, each epoch): portable across machines", kind="cost", low=0),
    Metric("train_flops", "training FLOPs", "FLOP", "min", "training FLOPs up to this epoch: training GFLOPs per "
           "image x images seen; portable across machines, the compute axis of the Pareto front", kind="cost", low=0),
    Metric("train_device_seconds", "training device-seconds", "device-s", "min", "training seconds up to this "
           "epoch x the devices (workers) that trained; train_device_seconds_by_kind splits them by device kind",
           kind="cost", low=0, wall_clock=True),
    Metric("sample_gflops_per_image", "sampling GFLOPs per image", "GFLOP/image", "min", "FLOPs of the matrix "
           "products, convolutions and attention of generating one image under the sampler setting, counted as "
           "it runs (models/flops.py): portable across machines", kind="cost", low=0),
    Metric("train_images_per_second", "training images/s", "images/s", "none", "training images per second over "
           "all workers, the mean of the epochs up to this one, on the machine that ran it", kind="cost", low=0,
           wall_clock=True),
    Metric("train_tflops", "achieved TFLOP/s", "TFLOP/s", "none", "training GFLOPs per image x images per second: "
           "the arithmetic the trial got out of its devices, mean of the epochs up to this one", kind="cost",
           low=0, wall_clock=True),
    Metric("train_peak_fraction", "share of the bf16 peak", "%", "none", "achieved TFLOP/s as a share of the "
           "GPU's dense bf16 (fp16 on V100 / T4) tensor-core peak from its datasheet (models/accel.py); missing "
           "on CPUs and on GPUs not in the table", kind="cost", low=0, high=1, wall_clock=True),
    _seconds("eval_seconds", "evaluation time", "wall-clock seconds of this evaluation"),
    _seconds("bpd_seconds", "bits/dim time", "wall-clock seconds of the likelihood"),
    _seconds("pool_sample_seconds", "pool sampling time", "wall-clock seconds generating the CAS and "
             "augmentation pool"),
    _seconds("cas_seconds", "CAS time", "wall-clock seconds training and testing the CAS classifier"),
    _seconds("aug_seconds", "augmentation time", "wall-clock seconds of the augmentation-gain classifiers"),
    _seconds("study_seconds", "augmentation study time", "wall-clock seconds of the augmentation study: its "
             "pool and every arm's classifiers"),
    _seconds("domain_metrics_seconds", "domain metrics time", "wall-clock seconds of the domain-feature metrics"),
    _seconds("inception_metrics_seconds", "Inception metrics time", "wall-clock seconds of the Inception metrics"),
]}
# spread column (the figure's own, or one part's) -> its metric
SPREADS = {column: m for m in METRICS.values() for column in (m.spread, m.part_spread) if column}


# the figures _fidelity makes for an extractor kind, longest name first where one begins another
FIDELITY_BASES = ("fid_inf", "fid", "kid", "is", "precision", "recall", "density", "coverage", "vendi")


@functools.lru_cache(maxsize=64)
def _extractor_entries(kind: str) -> dict[str, Metric]:
    """The catalog entries of a user's extractor (eval.extractors: "dinov2" -> fid_dinov2, ...), by column,
    its spreads and its time included."""
    entries = {m.name: m for m in _fidelity(kind, kind)}
    entries.update({column: m for m in list(entries.values()) for column in (m.spread, m.part_spread) if column})
    time = _seconds(f"{kind}_metrics_seconds", f"{kind} metrics time", f"wall-clock seconds of the {kind} metrics")
    return {**entries, time.name: time}


def _extractor_kind(column: str) -> str | None:
    """The extractor kind a column of a user's extractor names ("kid_dinov2_std" -> "dinov2"), or None."""
    if column.endswith("_metrics_seconds"):
        kind = column.removesuffix("_metrics_seconds")
    else:
        base = next((b for b in FIDELITY_BASES if column.startswith(b + "_")), None)
        if base is None:
            return None
        kind = column[len(base) + 1:].removesuffix("_std").removesuffix("_se")
    return kind if kind.isascii() and kind.isalnum() and kind.islower() and kind[:1].isalpha() else None


def lookup(column: str) -> Metric | None:
    """The catalog entry a results column belongs to: the metric itself, the metric whose spread it is, a
    per-class column ("sample_accuracy.angry") of a per-class metric, or a figure in a user's extractor's
    features (eval.extractors: "fid_dinov2"); None if none."""
    if column in METRICS:
        return METRICS[column]
    if column in SPREADS:
        return SPREADS[column]
    base = column.split(".", 1)[0]
    entry = METRICS.get(base) or SPREADS.get(base)
    if entry is not None:
        return entry if "." in column and entry.per_class else None
    kind = _extractor_kind(column)
    return _extractor_entries(kind).get(column) if kind else None


def uncatalogued(columns) -> list[str]:
    """The metric columns (reports.inputs.metric_columns) with no catalog entry."""
    return [c for c in columns if lookup(c) is None]


def label(column: str) -> str:
    """A column's label with its unit and direction arrow ("FID (Inception) ↓", "bits/dim (bits/dim) ↓"),
    per-class columns with their class, wall-clock times marked as such; the column name if uncatalogued."""
    entry = lookup(column)
    if entry is None:
        return column
    text = entry.label + (f": {column.split('.', 1)[1]}" if "." in column else "")
    unit = "" if entry.unit in ("", "%") or entry.unit in entry.label else f" ({entry.unit})"
    clock = ", wall clock" if entry.wall_clock else ""
    return f"{text}{unit}{clock} {entry.arrow}".strip()
