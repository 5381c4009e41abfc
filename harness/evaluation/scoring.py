"""Scoring one checkpoint of a generator, as an evaluation plan (harness/evaluation/plan.py) says.

``evaluate`` runs on rank 0 of a trial at its tracking and trial-final evaluations and in the finalist
stage's Ray tasks. It generates the plan's seeded samples, scores them against the shared reference
(harness/evaluation/reference.py), and returns one record: the metrics (NaN where missing), why each missing one
is missing, and the protocol every figure was computed under.
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from condgen_bench.harness.config import EvalConfig
from condgen_bench.datasets.base import DatasetSplits
from condgen_bench.harness.evaluation.augment_study import best_setting, study_of_method
from condgen_bench.models.flops import sampling_flops_per_image
from condgen_bench.harness.evaluation.diversity import memorization
from condgen_bench.harness.evaluation.downstream import augmentation_gain, classification_accuracy_score, pool_labels
from condgen_bench.harness.evaluation.extractors import INCEPTION_SIZE, Extractor, extract_features, register_classifier
from condgen_bench.harness.evaluation.fidelity import (EQUAL_SIZE_DRAWS, FID_INF_DRAWS, GaussianStats, accuracy,
                                            bootstrap_std, fid_sizes, intra_class_fid, kid_subset, score_features)
from condgen_bench.reports.paired import bpd_arrays, sample_arrays
from condgen_bench.harness.evaluation.plan import EvalPlan
from condgen_bench.harness.evaluation.reference import EvalReference
from condgen_bench.models.accel import evaluation_math
from condgen_bench.models.classifier import predict
from condgen_bench.models.interface import Method
from condgen_bench.reports.run_folder import layout

MEMORIZATION_QUANTILE = 0.05  # "memorized": closer to a training image than 95% of training images are to another

# what score_features returns, each stored as "<name>_<extractor kind>" ("fid_domain", "kid_inception_std")
FIDELITY_KEYS = ("fid", "fid_std", "fid_inf", "kid", "kid_std", "is", "is_std", "is_se", "precision", "precision_std",
                 "recall", "recall_std", "density", "density_std", "coverage", "coverage_std", "vendi", "vendi_std")


SPREAD_KEYS = ("_std", "_se")  # score_features keys ending so are spreads: tagged before the suffix, never missing


def tagged(key: str, kind: str) -> str:
    """The results column of a score_features key for one extractor kind: ("kid_std", "domain") -> "kid_domain_std",
    ("is_se", "inception") -> "is_inception_se"."""
    for suffix in SPREAD_KEYS:
        if key.endswith(suffix):
            return f"{key.removesuffix(suffix)}_{kind}{suffix}"
    return f"{key}_{kind}"


def sample_grid(images: torch.Tensor, rows: int) -> np.ndarray:
    """Tile images [rows * cols, C, H, W] uint8 (row-major) into [rows * H, cols * W (, C)] uint8."""
    n, c, h, w = images.shape
    cols = n // rows
    grid = images[: rows * cols].reshape(rows, cols, c, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, cols * w, c)
    grid = grid.numpy()
    return grid[:, :, 0] if c == 1 else grid


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def sampling_grid(method: Method, sweep: dict[str, list]) -> list[dict]:
    """The settings of a sampling sweep over ``method``'s sampler axes (method.sampler_axes): the product
    of the listed values in the method's axis order, e.g. {"steps": [10, 50], "guidance": [1, 3]} -> 4
    dicts. Settings the method samples alike (method.sampling_settings equal: DDPM's ancestral sampler
    ignores eta) are merged into the first, without the axes it ignores. Unknown axes raise ValueError."""
    axes = [axis.name for axis in method.sampler_axes]
    unknown = sorted(set(sweep) - set(axes))
    if unknown:
        raise ValueError(f"unknown sampling sweep axes {unknown} for {method.name}; its sampler's axes: "
                         f"{axes or 'none (nothing to vary)'}")
    grid = [{}]
    for axis in axes:
        if axis in sweep:
            grid = [{**g, axis: value} for g in grid for value in sweep[axis]]
    out, seen = [], []
    for g in grid:
        used = method.sampling_settings(**g)
        if used not in seen:
            seen.append(used)
            out.append({k: v for k, v in g.items() if k in used})
    return out


def setting_key(settings: dict) -> str:
    """A folder-safe name of sampler settings, in their order: text values as they are, numbers after
    their axis name: {"sampler": "ddim", "steps": 10, "guidance": 2.0} -> "ddim-steps10-guidance2"."""
    parts = [str(v) if isinstance(v, str) else f"{k}{v:g}" for k, v in settings.items()]
    return "-".join(parts) or "default"


@dataclass
class Scores:
    """Figures of one part of an evaluation, merged into its record: what each part returns."""

    metrics: dict[str, float] = field(default_factory=dict)  # name -> value (NaN where missing)
    missing: dict[str, str] = field(default_factory=dict)  # name -> why it is missing
    protocol: dict = field(default_factory=dict)  # setting -> value: how the figures were computed
    per_sample: dict[str, np.ndarray] = field(default_factory=dict)  # what the paired tests resample

    def merge(self, other: Scores) -> Scores:
        """Add ``other``'s figures to these (its win where both have one); returns self."""
        for mine, theirs in ((self.metrics, other.metrics), (self.missing, other.missing),
                             (self.protocol, other.protocol), (self.per_sample, other.per_sample)):
            mine.update(theirs)
        return self

    def starting(self, prefix: str) -> Scores:
        """The figures, reasons, settings and arrays whose names start with ``prefix``."""
        return Scores(*({k: v for k, v in part.items() if k.startswith(prefix)}
                        for part in (self.metrics, self.missing, self.protocol, self.per_sample)))


def missing_all(keys, kind: str, reason: str) -> Scores:
    """NaN for each score_features key of one extractor kind, and the reason for each value (not spreads)."""
    return Scores({tagged(key, kind): math.nan for key in keys},
                  {tagged(key, kind): reason for key in keys if not key.endswith(SPREAD_KEYS)})


def fidelity_metrics(samples: torch.Tensor, kind: str, extractor: Extractor,
                     real: dict[str, torch.Tensor], config: EvalConfig,
                     device="cpu") -> tuple[Scores, dict[str, torch.Tensor]]:
    """FID (raw, spread and FID∞) / KID / IS / precision-recall / density-coverage / Vendi of ``samples``
    [N, C, H, W] uint8 in one extractor's features against a real split's features ``real`` {layer: [M, D]}.
    Returns (the tagged metrics and why any is missing, the samples' features {layer: [N, D]})."""
    gen = extract_features(samples, extractor, config.batch_size, device)
    values, missing = score_features(gen, real, extractor, kid_subset_size=config.kid_subset_size,
                                     kid_subsets=config.kid_subsets, isc_splits=config.isc_splits,
                                     prc_neighborhood=config.prc_neighborhood, bootstrap=config.bootstrap,
                                     seed=config.seed)
    metrics = {tagged(key, kind): values.get(key, math.nan) for key in FIDELITY_KEYS}
    return Scores(metrics, {tagged(key, kind): reason for key, reason in missing.items()}), gen


def memorization_metrics(samples: torch.Tensor, features: torch.Tensor, train, extractor: Extractor, config: EvalConfig,
                         device="cpu") -> tuple[dict, bytes]:
    """How close ``samples`` [N, C, H, W] uint8 (with their ``extractor`` features [N, D]) come to the training
    images ``train`` (a Split): harness/evaluation/diversity.py memorization in the extractor's features and in pixels.
    Returns ({metric: value}, PNG of the closest pairs: generated images above, their nearest training
    images below, closest first)."""
    train_features = extract_features(train.images, extractor, config.batch_size, device)[extractor.layer("fid")]
    found = memorization(features, train_features, samples, train.images, q=MEMORIZATION_QUANTILE, seed=config.seed)
    n, pixels = len(samples), samples[0].numel()
    share, feature_distance = found["memorized_share"], found["per_sample"]["nn_distance_features"]
    # pixel distances as the root mean square difference per value, on the 0..255 scale
    pixel_distance = found["per_sample"]["nn_distance_pixels"] / math.sqrt(pixels)
    metrics = {"memorized_share": share, "memorized_share_std": math.sqrt(share * (1 - share) / n),
               "train_distance_domain": float(feature_distance.mean()),
               "train_distance_domain_std": float(feature_distance.std(ddof=1) / math.sqrt(n)),
               "train_distance_pixels": float(pixel_distance.mean()),
               "train_distance_pixels_std": float(pixel_distance.std(ddof=1) / math.sqrt(n)),
               "memorized_threshold_domain": found["memorized_threshold"]}
    pairs = found["closest"]
    gallery = torch.cat([samples[[i for i, _, _ in pairs]], train.images[[j for _, j, _ in pairs]]])
    return metrics, png_bytes(sample_grid(gallery, 2))


MEMORIZATION_KEYS = ("memorized_share", "memorized_share_std", "train_distance_domain", "train_distance_domain_std",
                     "train_distance_pixels", "train_distance_pixels_std", "memorized_threshold_domain")


def sample_metrics(method: Method, data: DatasetSplits, ref: EvalReference,
                   config: EvalConfig, plan: EvalPlan, device="cpu"
                   ) -> tuple[Scores, bytes, dict[str, bytes]]:
    """Generate the plan's seeded images (plan.samples_per_class a class) with the method's sampler
    (plan.settings override it) and score them: accuracy overall and per class, FID (raw and FID∞) / KID /
    IS / precision-recall in the domain classifier's features and, where the plan says so, in Inception's;
    intra-class FID in the domain features where the plan says so; seconds per image, network evaluations.
    Returns (the scores, whose per-sample arrays are the paired tests' reports.paired.sample_arrays; PNG of
    the sample grid; other files to keep beside the record {name: bytes}: the memorization gallery where the
    plan computes it)."""
    settings = plan.settings
    k = data.num_classes
    n = plan.samples_per_class
    labels = torch.arange(k).repeat_interleave(n)
    seeds = plan.sample_seed + torch.arange(k * n)
    t0 = time.time()
    samples, finite = method.sample_checked(labels, seeds, batch_size=config.batch_size, **settings)
    sample_seconds = time.time() - t0
    # a sample with a NaN or infinite value (a diverged sampler) is a failure: a miss in the accuracy, and
    # scored by the fidelity metrics as the image it became (black where NaN); the row says how many
    metrics: dict[str, float] = {"nonfinite_samples": float((~finite).sum())}

    # the real images compared with: validation where the figures decide, test for the finalists (plan.split)
    reference_set, split = data.reference_set(plan.split)
    real_features = ref.features(plan.split)
    classifier = ref.classifier(data.channels, k, device)
    probs = predict(classifier, samples)
    overall, per_class = accuracy(probs, labels, data.class_names, valid=finite)
    metrics["sample_accuracy"] = overall
    hits = ((probs.argmax(1) == labels) & finite).double().numpy()
    metrics["sample_accuracy_std"] = bootstrap_std(lambda idx: hits[idx].mean(), len(hits), config.bootstrap,
                                                   config.seed)
    metrics.update({f"sample_accuracy.{name}": value for name, value in per_class.items()})
    metrics["classifier_real_accuracy"] = ref.classifier_accuracy
    metrics["classifier_real_accuracy_std"] = ref.classifier_accuracy_std
    metrics.update({f"classifier_real_accuracy.{name}": value for name, value in ref.classifier_per_class.items()})

    t0 = time.time()
    domain = register_classifier(classifier, ref.weights_hash)
    domain_scores, features = fidelity_metrics(samples, "domain", domain, real_features["domain"], config, device)
    scores = Scores(metrics).merge(domain_scores)
    layer = domain.layer("fid")
    if plan.computes("intra_class_fid"):
        mean, per_class_fid = intra_class_fid(features[layer], labels, real_features["domain"][layer],
                                              reference_set.labels, data.class_names, seed=config.seed)
        scores.metrics["fid_intra_domain"] = mean
        scores.metrics.update({f"fid_intra_domain.{name}": value for name, value in per_class_fid.items()})
    else:
        scores.merge(Scores({"fid_intra_domain": math.nan}, {"fid_intra_domain": plan.skip["intra_class_fid"]}))
    files = {}
    if plan.computes("memorization"):
        values, files[layout.MEMORIZATION_GRID] = memorization_metrics(samples, features[layer], data.train, domain,
                                                                      config, device)
        scores.metrics.update(values)
    else:
        scores.merge(Scores({key: math.nan for key in MEMORIZATION_KEYS},
                            {key: plan.skip["memorization"] for key in MEMORIZATION_KEYS if not key.endswith("_std")}))
    real = real_features["domain"][layer]
    scores.per_sample = sample_arrays(torch.as_tensor(hits).bool(), labels, seeds, features[layer], real,
                                      GaussianStats.of(real), ref.weights_hash)
    scores.metrics["domain_metrics_seconds"] = time.time() - t0
    skip = plan.skip.get("inception")
    if skip:
        scores.merge(missing_all(FIDELITY_KEYS, "inception", skip))
    else:
        t0 = time.time()
        try:
            scores.merge(fidelity_metrics(samples, "inception", ref.inception, real_features["inception"], config,
                                          device)[0])
        except (FileNotFoundError, ValueError) as e:  # this node lacks the run's Inception weights
            scores.merge(missing_all(FIDELITY_KEYS, "inception", str(e)))
        scores.metrics["inception_metrics_seconds"] = time.time() - t0
    for name, extractor in ref.extractors.items():  # eval.extractors: at the stages Inception is computed
        skip = plan.extractors_skip or (None if name in real_features else f"no real {split} features")
        if skip:
            scores.merge(missing_all(FIDELITY_KEYS, name, skip.replace("Inception", name)))
        else:
            t0 = time.time()
            try:
                scores.merge(fidelity_metrics(samples, name, extractor, real_features[name], config, device)[0])
            except (FileNotFoundError, ValueError) as e:  # this node lacks the file, or has another one
                scores.merge(missing_all(FIDELITY_KEYS, name, str(e)))
            scores.metrics[f"{name}_metrics_seconds"] = time.time() - t0
    metrics = scores.metrics
    metrics["sample_seconds_per_image"] = sample_seconds / len(samples)
    metrics["network_evaluations"] = float(method.network_evaluations(**settings))
    try:  # the portable sampling cost beside the network calls (models/flops.py)
        metrics["sample_gflops_per_image"] = sampling_flops_per_image(method, settings) / 1e9
    except Exception as error:  # noqa: BLE001 - any failure of the count: a missing figure, not a lost evaluation
        metrics["sample_gflops_per_image"] = math.nan
        scores.missing["sample_gflops_per_image"] = f"sampling FLOPs could not be counted: {type(error).__name__}: {error}"
    protocol = {
        "num_samples": len(samples), "samples_per_class": n, "sample_seed": plan.sample_seed,
        "reference_split": split, "reference_size": len(reference_set),
        "resolution": f"{data.channels}x{data.image_size}x{data.image_size}",
        "extractor": f"domain classifier {ref.weights_hash} (penultimate features, logits for IS)",
        "fid_inf_sizes": fid_sizes(len(samples)), "fid_inf_draws": FID_INF_DRAWS,
        "kid_subset_size": kid_subset(config.kid_subset_size, len(samples), len(reference_set)),
        "kid_subsets": config.kid_subsets, "isc_splits": min(config.isc_splits, len(samples)),
        "prc_neighborhood": config.prc_neighborhood, "bootstrap": config.bootstrap,
        "equal_size_draws": EQUAL_SIZE_DRAWS,  # of the larger set, for precision / recall, density / coverage
        "sampling": method.sampling_settings(**settings),
    }
    if plan.computes("memorization"):
        protocol["memorization_reference"] = (f"the {len(data.train)} training images ({data.train.split}); "
                                              f"threshold: the {MEMORIZATION_QUANTILE:.0%} quantile of their own "
                                              "nearest-neighbour distances in the domain features")
    if plan.computes("intra_class_fid"):
        protocol["fid_intra_reference"] = ("each class's real test images against its generated ones, the larger "
                                           "set cut to the smaller's size (equal_size_draws subsets, averaged)")
    protocol.update({f"{name}_extractor": extractor.description for name, extractor in ref.extractors.items()})
    if ref.inception is not None:
        protocol.update({
            "inception_extractor": ref.inception.description, "inception_weights_sha256": ref.inception.weights_sha256,
            "inception_resolution": f"3x{INCEPTION_SIZE}x{INCEPTION_SIZE} from {data.channels}x{data.image_size}x"
                                    f"{data.image_size}" + (", gray repeated to 3 channels" if data.channels == 1 else ""),
        })
    grid_rows = torch.cat([samples[labels == c][: config.grid_per_class] for c in range(k)])
    scores.protocol.update(protocol)
    return scores, png_bytes(sample_grid(grid_rows, k)), files


def downstream_metrics(method: Method, data: DatasetSplits, ref: EvalReference, config: EvalConfig, plan: EvalPlan,
                       device="cpu") -> Scores:
    """CAS (beside its real ceiling from the reference) and the augmentation gain (its real-only arm from the
    reference where it was trained under ``config``; harness/evaluation/downstream.py) of a seeded generated
    pool under the method's own sampler, as far as the plan computes them, their classifiers trained in this
    process (as Ray tasks they took longer: benchmarks/classifier_tasks.py).
    Returns their Scores (without per-sample arrays)."""
    metrics, missing, protocol = {"cas": math.nan, "aug_gain": math.nan}, {}, {}
    for part, name in (("cas", "cas"), ("augment", "aug_gain")):
        if not plan.computes(part):
            missing[name] = plan.skip[part]
    if len(missing) == 2:
        return Scores(metrics, missing, protocol)
    labels = pool_labels(data, config)
    seeds = config.seed + 1_000_000 + torch.arange(len(labels))  # apart from the scored samples' seeds
    t0 = time.time()
    pool = method.sample(labels, seeds, batch_size=config.batch_size)
    metrics["pool_sample_seconds"] = time.time() - t0
    protocol["pool_samples"] = len(labels)
    if plan.computes("cas"):
        values, settings = classification_accuracy_score(pool, labels, data, config, device)
        metrics.update(values, cas_real_accuracy=ref.cas_real_accuracy)  # the same recipe on as many real images
        protocol.update(settings, cas_real_images=ref.cas_real_images)
    if plan.computes("augment"):  # its real-only arm the reference's, trained once a run, where it has it
        values, settings = augmentation_gain(pool, labels, data, config, device, real_hits=ref.gain_real_hits(config))
        metrics.update(values)
        protocol.update(settings)
    return Scores(metrics, missing, protocol)


STUDY_KEYS = ("study_best_gain", "study_best_gain_se", "study_best_ratio", "study_real_accuracy",
              "study_real_accuracy_std")


def augment_study_metrics(method: Method, data: DatasetSplits, ref: EvalReference, config: EvalConfig,
                          plan: EvalPlan, device="cpu", runner=None) -> tuple[Scores, dict[str, bytes]]:
    """The augmentation study (harness/evaluation/augment_study.py) under the method's own sampler, where the
    plan computes it. Returns (its headline Scores: the best mixed arm's gain over real-only with its standard
    error (its 95% interval: ± 1.96 of it), its ratio (the arm in the protocol), the real arm's accuracy; files to keep beside
    the record: every arm as JSON (layout.AUGMENT_STUDY) and the real / selected images' grid)."""
    if not plan.computes("augment_study"):
        reason = plan.skip["augment_study"]
        return Scores({key: math.nan for key in STUDY_KEYS},
                      {key: reason for key in STUDY_KEYS if not key.endswith(("_std", "_se"))}), {}
    t0 = time.time()
    rows, protocol, shown = study_of_method(method, data, ref, config, device, runner)
    best = best_setting(rows)
    real = next(r for r in rows if r["kind"] == "real" and not r["augment"])
    metrics = {"study_best_gain": best["gain"], "study_best_gain_se": best["gain_se"], "study_best_ratio": best["ratio"], "study_real_accuracy": real["accuracy"],
               "study_real_accuracy_std": real["accuracy_se"], "study_seconds": time.time() - t0}
    files = {layout.AUGMENT_STUDY: json.dumps(rows, indent=1).encode()}
    if len(shown):
        files[layout.AUGMENT_STUDY_GRID] = png_bytes(sample_grid(shown, 2 * data.num_classes))
    return Scores(metrics, {}, protocol), files


def likelihood_metrics(method: Method, data: DatasetSplits, config: EvalConfig, skip: str | None = None,
                       split: str = "test") -> Scores:
    """The method's likelihood figure (DDPM's variational bound) on the first ``bpd_images`` images of the
    real ``split`` ("validation" at the trial stages, "test" for the finalists: EvalPlan.split), per image,
    then its mean and standard error (bits/dim) and the mean of each part the method reports beside "total"
    (bpd_<part>); ``skip``: the reason not to. Its per-sample arrays: reports.paired.bpd_arrays."""
    nan = {"bpd": math.nan, "bpd_stderr": math.nan}
    if skip:  # the plan's reason (a family without a likelihood among them: plan.Capabilities)
        return Scores(nan, {"bpd": skip})
    images, split = data.reference_set(split)
    bpd_n = min(config.bpd_images, len(images))
    if bpd_n == 0:
        return Scores(nan, {"bpd": "disabled (eval.bpd_images = 0)"}, {"bpd_images": 0})
    t0 = time.time()
    parts = []
    seeds = config.seed + 10_000_000 + torch.arange(bpd_n)
    for start in range(0, bpd_n, config.batch_size):
        sl = slice(start, min(start + config.batch_size, bpd_n))
        parts.append(method.bits_per_dim(images.images[sl], images.labels[sl], seeds[sl],
                                         t_samples=config.bpd_t_samples))
    per_image = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    total = per_image["total"]
    metrics = {"bpd": total.mean().item(),
               "bpd_stderr": (total.std(unbiased=True) / math.sqrt(len(total))).item() if len(total) > 1 else math.nan}
    for key in per_image:  # the method's parts of the figure (DDPM: prior, decoder, kl)
        if key != "total":
            metrics[f"bpd_{key}"] = per_image[key].mean().item()
    metrics["bpd_seconds"] = time.time() - t0
    protocol = {"bpd_images": bpd_n, "bpd_split": split,
                "bpd_t_samples": "all" if config.bpd_t_samples is None else config.bpd_t_samples,
                **method.likelihood_protocol()}
    return Scores(metrics, {}, protocol, bpd_arrays(total, images.images[:bpd_n], seeds))


def evaluate(method: Method, data: DatasetSplits, ref: EvalReference, config: EvalConfig, plan: EvalPlan, device="cpu",
             likelihood: Scores | None = None, runner=None) -> tuple[dict, bytes]:
    """Score ``method`` (see models/__init__.py) on ``data`` with the shared reference, computing what
    ``plan`` says and nothing else: its samples under plan.settings (the method's own sampler where empty),
    its bound on real images (``likelihood``: where plan.bpd_from names another record of the checkpoint,
    that record's result of likelihood_metrics, which does not depend on the sampler), CAS and the
    augmentation gain; ``runner``: what trains the augmentation study's classifiers (downstream.run_jobs's
    runner; None: one after another in this process).

    config: EvalConfig. Returns (record, PNG of the sample grid). The record holds the stage, the numeric
    metrics (NaN where missing), "missing" {metric: reason}, the protocol every figure was computed under
    (its math mode included: plain fp32 whatever the training ran in, models/accel.py evaluation_math), and
    "per_sample" {name: array}: what the paired tests need (reports/paired.py), and "files" {name: bytes}
    (the memorization gallery); reports/run_folder/records.py EvalRecord stores both beside the record.
    """
    with evaluation_math() as math_mode:
        record, grid = _evaluate(method, data, ref, config, plan, device, likelihood, runner)
    record["protocol"]["eval_math"] = math_mode
    return record, grid


def _evaluate(method: Method, data: DatasetSplits, ref: EvalReference, config: EvalConfig, plan: EvalPlan, device,
              likelihood: Scores | None, runner=None) -> tuple[dict, bytes]:
    t_start = time.time()
    scores, grid, files = sample_metrics(method, data, ref, config, plan, device)
    if likelihood is None:
        likelihood = likelihood_metrics(method, data, config, skip=plan.skip.get("bpd"), split=plan.split)
    scores.merge(likelihood).merge(downstream_metrics(method, data, ref, config, plan, device))
    study, study_files = augment_study_metrics(method, data, ref, config, plan, device, runner)
    scores.merge(study)
    files.update(study_files)
    scores.metrics["eval_seconds"] = time.time() - t_start
    return {"stage": plan.stage, "metrics": scores.metrics, "missing": scores.missing, "protocol": scores.protocol,
            "per_sample": scores.per_sample, "files": files}, grid
