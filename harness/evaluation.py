"""Scoring a trained generator.

``prepare_reference`` runs once per dataset in the sweep driver, before any trial: it trains the
evaluation classifier on the real training split (the whole of it in few-shot runs) (or reads it from
the cache keyed by the dataset fingerprint and the classifier config), measures its real test accuracy,
chooses the Inception extractor, and extracts the real test split's features for every extractor (or
reads them from the cache keyed by fingerprint, split and extractor). The features travel to every trial
with the reference, so no trial extracts real features. ``evaluate`` runs on rank 0 of a trial at each
evaluation epoch.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from datasets.base import DatasetSplits
from harness import storage
from harness.downstream import augmentation_gain, classification_accuracy_score, pool_labels
from harness.fidelity import (INCEPTION_SIZE, Extractor, bootstrap_std, extract_features, reference_features,
                              register_classifier, resolve_inception, score_features)
from models.classifier import ClassifierConfig, ResNetClassifier, predict, train_classifier

# what score_features returns, each stored as "<name>_<extractor kind>" ("fid_domain", "kid_inception_std")
FIDELITY_KEYS = ("fid", "fid_std", "kid", "kid_std", "is", "is_std", "precision", "precision_std", "recall",
                 "recall_std")


def tagged(key: str, kind: str) -> str:
    """The results column of a score_features key for one extractor kind: ("kid_std", "domain") -> "kid_domain_std"."""
    return f"{key[:-4]}_{kind}_std" if key.endswith("_std") else f"{key}_{kind}"


@dataclass
class EvalReference:
    """What every trial of one dataset shares (small: shipped to trials through the object store)."""

    classifier_state: dict  # ResNetClassifier weights
    classifier_config: dict  # its ClassifierConfig
    weights_hash: str  # names the torch-fidelity extractor and its cache entries
    classifier_accuracy: float  # on the real test split
    classifier_per_class: dict[str, float]
    classifier_accuracy_std: float  # over the real test images
    reference_split: str  # the real split samples are compared with
    inception: Extractor | None  # None: no Inception network available (see inception_missing)
    inception_missing: str  # why there is no Inception extractor ("" when there is one)
    real_features: dict[str, dict[str, torch.Tensor]]  # {"domain" / "inception": {layer: [N_ref, D]}}

    def classifier(self, in_channels: int, num_classes: int, device="cpu") -> ResNetClassifier:
        net = ResNetClassifier(in_channels, num_classes, ClassifierConfig(**self.classifier_config))
        net.load_state_dict(self.classifier_state)
        return net.to(device).eval()


def _weights_hash(state: dict) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def accuracy(probs: torch.Tensor, labels: torch.Tensor, class_names) -> tuple[float, dict[str, float]]:
    """Overall and per-class accuracy of argmax predictions. probs: [N, K]; labels: [N]."""
    hit = (probs.argmax(1) == labels).float()
    per_class = {name: hit[labels == k].mean().item() if (labels == k).any() else float("nan")
                 for k, name in enumerate(class_names)}
    return hit.mean().item(), per_class


def prepare_reference(data: DatasetSplits, eval_config, cache_dir: str, log=print) -> EvalReference:
    """Train (or load from ``cache_dir``) the evaluation classifier for ``data`` (eval_config: EvalConfig),
    choose the Inception extractor, and extract (or load) the real test split's features for each."""
    config = eval_config.classifier
    config_key = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:8]
    path = os.path.join(cache_dir, "classifiers", f"{data.name}-{data.fingerprint}-{config_key}.pt")
    if os.path.exists(path):
        saved = torch.load(path, weights_only=True)
        log(f"evaluation classifier: read from cache {path}")
    else:
        real = data.classifier_train  # the whole training split, also in few-shot runs
        log(f"evaluation classifier: training on {len(real)} real images ({config.epochs} epochs)")
        t0 = time.time()
        net = train_classifier(real.images, real.labels, data.num_classes, config, log=log)
        acc, per_class = accuracy(predict(net, data.test.images), data.test.labels, data.class_names)
        saved = {"state": net.state_dict(), "accuracy": acc, "per_class": per_class,
                 "seconds": time.time() - t0}
        buffer = io.BytesIO()
        torch.save(saved, buffer)
        storage.write_bytes(path, buffer.getvalue())
    acc = saved["accuracy"]
    log(f"evaluation classifier: real test accuracy {acc:.4f}")
    weights_hash = _weights_hash(saved["state"])
    inception, inception_missing = resolve_inception(eval_config.inception_weights, eval_config.inception_download)
    log(f"Inception metrics: {inception.description if inception else 'missing: ' + inception_missing}")
    ref = EvalReference(
        classifier_state=saved["state"], classifier_config=asdict(config), weights_hash=weights_hash,
        classifier_accuracy=acc, classifier_per_class=saved["per_class"],
        classifier_accuracy_std=math.sqrt(acc * (1 - acc) / len(data.test)), reference_split="test",
        inception=inception, inception_missing=inception_missing, real_features={},
    )
    domain = register_classifier(ref.classifier(data.channels, data.num_classes), weights_hash)
    for kind, extractor in (("domain", domain), ("inception", inception)):
        if extractor is not None:
            ref.real_features[kind] = reference_features(
                data.test.images, extractor, cache_dir, f"{data.name}-{data.fingerprint}-test",
                batch_size=eval_config.batch_size, log=log)
    return ref


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


SWEEP_AXES = ("sampler", "steps", "eta", "guidance")  # what EvalConfig.sampling_sweep may vary


def sampling_grid(sweep: dict[str, list]) -> list[dict]:
    """The settings of a sampling sweep: the product of its axes, e.g. {"steps": [10, 50], "guidance": [1, 3]}
    -> 4 dicts. An ancestral ("ddpm") setting ignores eta, so settings differing only there are merged."""
    unknown = sorted(set(sweep) - set(SWEEP_AXES))
    if unknown:
        raise ValueError(f"unknown sampling sweep axes {unknown}; valid: {list(SWEEP_AXES)}")
    grid = [{}]
    for axis in SWEEP_AXES:
        if axis in sweep:
            grid = [{**g, axis: value} for g in grid for value in sweep[axis]]
    out = []
    for g in grid:
        if g.get("sampler") == "ddpm":
            g = {k: v for k, v in g.items() if k != "eta"}
        if g not in out:
            out.append(g)
    return out


def setting_key(settings: dict) -> str:
    """A folder-safe name of sampler settings: {"sampler": "ddim", "steps": 10, "guidance": 2.0} ->
    "ddim-steps10-guidance2"."""
    parts = [str(settings["sampler"])] if "sampler" in settings else []
    parts += [f"{k}{settings[k]:g}" for k in ("steps", "eta", "guidance") if k in settings]
    return "-".join(parts) or "default"


def fidelity_metrics(samples: torch.Tensor, kind: str, extractor: Extractor, ref: EvalReference, config,
                     device="cpu") -> tuple[dict, dict]:
    """FID / KID / IS / precision-recall (and spreads) of ``samples`` [N, C, H, W] uint8 in one extractor's
    features against the reference's real features. Returns ({tagged metric: value}, {tagged metric: reason})."""
    gen = extract_features(samples, extractor, config.batch_size, device)
    values, missing = score_features(gen, ref.real_features[kind], extractor, kid_subset_size=config.kid_subset_size,
                                     kid_subsets=config.kid_subsets, isc_splits=config.isc_splits,
                                     prc_neighborhood=config.prc_neighborhood, bootstrap=config.bootstrap,
                                     seed=config.seed)
    metrics = {tagged(key, kind): values.get(key, math.nan) for key in FIDELITY_KEYS}
    return metrics, {tagged(key, kind): reason for key, reason in missing.items()}


def sample_metrics(method, data: DatasetSplits, ref: EvalReference, config, device="cpu",
                   settings: dict | None = None, final: bool = True) -> tuple[dict, dict, dict, bytes]:
    """Generate ``samples_per_class`` seeded images per class with the method's sampler (``settings``
    override it) and score them: accuracy overall and per class, FID / KID / IS / precision-recall in
    the domain classifier's features and in Inception's (where available and eval.inception_at says so;
    ``final``: this is the trial's last epoch), seconds per image, network evaluations.
    Returns (metrics, missing {metric: reason}, protocol, PNG of the sample grid)."""
    settings = settings or {}
    k = data.num_classes
    n = config.samples_per_class
    labels = torch.arange(k).repeat_interleave(n)
    seeds = config.seed + torch.arange(k * n)
    t0 = time.time()
    samples = method.sample(labels, seeds, batch_size=config.batch_size, **settings)
    sample_seconds = time.time() - t0
    metrics: dict[str, float] = {}

    classifier = ref.classifier(data.channels, k, device)
    probs = predict(classifier, samples)
    overall, per_class = accuracy(probs, labels, data.class_names)
    metrics["sample_accuracy"] = overall
    hits = (probs.argmax(1) == labels).double().numpy()
    metrics["sample_accuracy_std"] = bootstrap_std(lambda idx: hits[idx].mean(), len(hits), config.bootstrap,
                                                   config.seed)
    metrics.update({f"sample_accuracy.{name}": value for name, value in per_class.items()})
    metrics["classifier_real_accuracy"] = ref.classifier_accuracy
    metrics["classifier_real_accuracy_std"] = ref.classifier_accuracy_std
    metrics.update({f"classifier_real_accuracy.{name}": value for name, value in ref.classifier_per_class.items()})

    missing: dict[str, str] = {}
    t0 = time.time()
    domain = register_classifier(classifier, ref.weights_hash)
    values, reasons = fidelity_metrics(samples, "domain", domain, ref, config, device)
    metrics.update(values)
    missing.update(reasons)
    metrics["domain_metrics_seconds"] = time.time() - t0
    skip = (ref.inception_missing if ref.inception is None else
            "disabled (eval.inception_at = never)" if config.inception_at == "never" else
            "computed at the final epoch only (eval.inception_at)" if config.inception_at == "final" and not final
            else None)
    if skip:
        metrics.update({tagged(key, "inception"): math.nan for key in FIDELITY_KEYS})
        missing.update({tagged(key, "inception"): skip for key in FIDELITY_KEYS if not key.endswith("_std")})
    else:
        t0 = time.time()
        try:
            values, reasons = fidelity_metrics(samples, "inception", ref.inception, ref, config, device)
        except (FileNotFoundError, ValueError) as e:  # this node lacks the run's Inception weights
            values = {tagged(key, "inception"): math.nan for key in FIDELITY_KEYS}
            reasons = {tagged(key, "inception"): str(e) for key in FIDELITY_KEYS if not key.endswith("_std")}
        metrics.update(values)
        missing.update(reasons)
        metrics["inception_metrics_seconds"] = time.time() - t0
    metrics["sample_seconds_per_image"] = sample_seconds / len(samples)
    metrics["network_evaluations"] = float(method.network_evaluations(**settings))
    protocol = {
        "num_samples": len(samples), "samples_per_class": n, "sample_seed": config.seed,
        "reference_split": ref.reference_split, "reference_size": len(data.test),
        "resolution": f"{data.channels}x{data.image_size}x{data.image_size}",
        "extractor": f"domain classifier {ref.weights_hash} (penultimate features, logits for IS)",
        "kid_subset_size": min(config.kid_subset_size, len(samples), len(data.test)),
        "kid_subsets": config.kid_subsets, "isc_splits": min(config.isc_splits, len(samples)),
        "prc_neighborhood": config.prc_neighborhood, "bootstrap": config.bootstrap,
        "sampling": method.sampling_settings(**settings),
    }
    if ref.inception is not None:
        protocol.update({
            "inception_extractor": ref.inception.description, "inception_weights_sha256": ref.inception.weights_sha256,
            "inception_resolution": f"3x{INCEPTION_SIZE}x{INCEPTION_SIZE} from {data.channels}x{data.image_size}x"
                                    f"{data.image_size}" + (", gray repeated to 3 channels" if data.channels == 1 else ""),
        })
    grid_rows = torch.cat([samples[labels == c][: config.grid_per_class] for c in range(k)])
    return metrics, missing, protocol, png_bytes(sample_grid(grid_rows, k))


def downstream_metrics(method, data: DatasetSplits, config, device="cpu") -> tuple[dict, dict, dict]:
    """CAS and the augmentation gain (harness/downstream.py) of a seeded generated pool under the method's
    own sampler. Returns (metrics, missing, protocol)."""
    metrics, missing, protocol = {}, {}, {}
    if not (config.cas or config.augment):
        return metrics, {"cas": "disabled (eval.cas)", "aug_gain": "disabled (eval.augment)"}, protocol
    labels = pool_labels(data, config)
    seeds = config.seed + 1_000_000 + torch.arange(len(labels))  # apart from the scored samples' seeds
    t0 = time.time()
    pool = method.sample(labels, seeds, batch_size=config.batch_size)
    metrics["pool_sample_seconds"] = time.time() - t0
    protocol["pool_samples"] = len(labels)
    for enabled, name, score in ((config.cas, "cas", classification_accuracy_score),
                                 (config.augment, "aug_gain", augmentation_gain)):
        if enabled:
            values, settings = score(pool, labels, data, config, device)
            metrics.update(values)
            protocol.update(settings)
        else:
            missing[name] = f"disabled (eval.{'cas' if name == 'cas' else 'augment'})"
    return metrics, missing, protocol


def likelihood_metrics(method, data: DatasetSplits, config, skip: str | None = None) -> tuple[dict, dict, dict]:
    """The variational bound on the real test split's first ``bpd_images`` images, per image, then
    its mean and standard error (bits/dim) and the mean of each part; ``skip``: the reason not to.
    Returns (metrics, missing, protocol)."""
    bpd_n = min(config.bpd_images, len(data.test))
    nan = {"bpd": math.nan, "bpd_stderr": math.nan}
    if not getattr(method, "has_likelihood", False):  # first: no epoch of a GAN has a bound
        return nan, {"bpd": f"{method.name} has no likelihood"}, {"bpd_images": 0}
    if skip:
        return nan, {"bpd": skip}, {}
    if bpd_n == 0:
        return nan, {"bpd": "disabled (eval.bpd_images = 0)"}, {"bpd_images": 0}
    t0 = time.time()
    parts = []
    for start in range(0, bpd_n, config.batch_size):
        sl = slice(start, min(start + config.batch_size, bpd_n))
        parts.append(method.bits_per_dim(data.test.images[sl], data.test.labels[sl],
                                         config.seed + 10_000_000 + torch.arange(sl.start, sl.stop),
                                         t_samples=config.bpd_t_samples))
    per_image = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    total = per_image["total"]
    metrics = {"bpd": total.mean().item(),
               "bpd_stderr": (total.std(unbiased=True) / math.sqrt(len(total))).item() if len(total) > 1 else math.nan}
    for key in ("prior", "decoder", "kl"):
        metrics[f"bpd_{key}"] = per_image[key].mean().item()
    metrics["bpd_seconds"] = time.time() - t0
    protocol = {"bpd_images": bpd_n, "bpd_split": "test",
                "bpd_t_samples": "all" if config.bpd_t_samples is None else config.bpd_t_samples,
                **method.likelihood_protocol()}
    return metrics, {}, protocol


def evaluate(method, data: DatasetSplits, ref: EvalReference, config, device="cpu",
             settings: dict | None = None, likelihood: tuple[dict, dict, dict] | None = None,
             final: bool = True) -> tuple[dict, bytes]:
    """Score ``method`` (see models/__init__.py) on ``data`` with the shared reference: its samples under
    the method's sampler (or ``settings``) and its bound on real test images (``likelihood``: reuse
    a result of likelihood_metrics, which does not depend on the sampler). At the ``final`` epoch under the
    method's own sampler, also CAS and the augmentation gain.

    config: EvalConfig. Returns (record, PNG of the sample grid). The record holds the numeric metrics
    (NaN where missing), "missing" {metric: reason}, and the protocol every figure was computed under.
    """
    t_start = time.time()
    metrics, missing, protocol, grid = sample_metrics(method, data, ref, config, device, settings, final)
    bound = likelihood if likelihood is not None else likelihood_metrics(method, data, config)
    parts = [bound]
    if final and not settings:
        parts.append(downstream_metrics(method, data, config, device))
    else:
        reason = "computed at the final epoch only" if not final else "computed under the model's own sampler only"
        parts.append(({"cas": math.nan, "aug_gain": math.nan}, {"cas": reason, "aug_gain": reason}, {}))
    for values, reasons, settings_used in parts:
        metrics.update(values)
        missing.update(reasons)
        protocol.update(settings_used)
    metrics["eval_seconds"] = time.time() - t_start
    return {"metrics": metrics, "missing": missing, "protocol": protocol}, grid
