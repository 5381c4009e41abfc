"""Scoring a trained generator.

``prepare_reference`` runs once per dataset in the sweep driver, before any trial: it trains the
evaluation classifier on the real training split (the whole of it in few-shot runs) (or reads it from the cache keyed by the dataset
fingerprint and the classifier config), measures its real test accuracy, and caches the real
features for torch-fidelity. ``evaluate`` runs on rank 0 of a trial at each evaluation epoch.
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
from harness.fidelity import fidelity_metrics, register_classifier
from models.classifier import ClassifierConfig, ResNetClassifier, predict, train_classifier


@dataclass
class EvalReference:
    """What every trial of one dataset shares (small: shipped to trials through the object store)."""

    classifier_state: dict  # ResNetClassifier weights
    classifier_config: dict  # its ClassifierConfig
    weights_hash: str  # names the torch-fidelity extractor and its cache entries
    classifier_accuracy: float  # on the real test split
    classifier_per_class: dict[str, float]
    cache_root: str  # torch-fidelity cache (absolute)
    real_cache_name: str  # torch-fidelity's cache name of the reference split
    reference_split: str  # the real split samples are compared with

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


def prepare_reference(data: DatasetSplits, config: ClassifierConfig, cache_dir: str, log=print) -> EvalReference:
    """Train (or load from ``cache_dir``) the evaluation classifier for ``data`` and cache the real
    features of its test split for torch-fidelity."""
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
    log(f"evaluation classifier: real test accuracy {saved['accuracy']:.4f}")
    weights_hash = _weights_hash(saved["state"])
    ref = EvalReference(
        classifier_state=saved["state"], classifier_config=asdict(config), weights_hash=weights_hash,
        classifier_accuracy=saved["accuracy"], classifier_per_class=saved["per_class"],
        cache_root=os.path.join(cache_dir, "fidelity"), real_cache_name=f"{data.name}-{data.fingerprint}-test",
        reference_split="test",
    )
    # Extract and cache the reference features now, once; the self-comparison must give FID ~ 0.
    extractor = register_classifier(ref.classifier(data.channels, data.num_classes), weights_hash)
    self_check = fidelity_metrics(data.test.images, data.test.images, extractor=extractor,
                                  real_cache_name=ref.real_cache_name, cache_root=ref.cache_root,
                                  kid_subset_size=1000, kid_subsets=10, isc_splits=10)
    log(f"real test split in domain features: FID against itself {self_check['frechet_inception_distance']:.4f}, "
        f"IS {self_check['inception_score_mean']:.3f} (cached under {ref.cache_root})")
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


def sample_metrics(method, data: DatasetSplits, ref: EvalReference, config, device="cpu",
                   settings: dict | None = None) -> tuple[dict, dict, dict, bytes]:
    """Generate ``samples_per_class`` seeded images per class with the method's sampler (``settings``
    override it) and score them: accuracy overall and per class, FID / KID / IS in the domain
    classifier's features, seconds per image, network evaluations.
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
    metrics.update({f"sample_accuracy.{name}": value for name, value in per_class.items()})
    metrics["classifier_real_accuracy"] = ref.classifier_accuracy
    metrics.update({f"classifier_real_accuracy.{name}": value for name, value in ref.classifier_per_class.items()})

    extractor = register_classifier(classifier, ref.weights_hash)
    fid = fidelity_metrics(samples, data.test.images, extractor=extractor, real_cache_name=ref.real_cache_name,
                           cache_root=ref.cache_root, kid_subset_size=config.kid_subset_size,
                           kid_subsets=config.kid_subsets, isc_splits=config.isc_splits,
                           cuda=torch.device(device).type == "cuda")
    metrics["fid_domain"] = fid["frechet_inception_distance"]
    metrics["kid_domain"] = fid["kernel_inception_distance_mean"]
    metrics["kid_domain_std"] = fid["kernel_inception_distance_std"]
    metrics["is_domain"] = fid["inception_score_mean"]
    metrics["is_domain_std"] = fid["inception_score_std"]
    metrics["sample_seconds_per_image"] = sample_seconds / len(samples)
    metrics["network_evaluations"] = float(method.network_evaluations(**settings))
    protocol = {
        "num_samples": len(samples), "samples_per_class": n, "sample_seed": config.seed,
        "reference_split": ref.reference_split, "reference_size": len(data.test),
        "resolution": f"{data.channels}x{data.image_size}x{data.image_size}",
        "extractor": f"domain classifier {ref.weights_hash} (penultimate features, logits for IS)",
        "kid_subset_size": min(config.kid_subset_size, len(samples), len(data.test)),
        "sampling": method.sampling_settings(**settings),
    }
    grid_rows = torch.cat([samples[labels == c][: config.grid_per_class] for c in range(k)])
    return metrics, {}, protocol, png_bytes(sample_grid(grid_rows, k))


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
             settings: dict | None = None, likelihood: tuple[dict, dict, dict] | None = None) -> tuple[dict, bytes]:
    """Score ``method`` (see models/__init__.py) on ``data`` with the shared reference: its samples under
    the method's sampler (or ``settings``) and its bound on real test images (``likelihood``: reuse
    a result of likelihood_metrics, which does not depend on the sampler).

    config: EvalConfig. Returns (record, PNG of the sample grid). The record holds the numeric metrics
    (NaN where missing), "missing" {metric: reason}, and the protocol every figure was computed under.
    """
    t_start = time.time()
    metrics, missing, protocol, grid = sample_metrics(method, data, ref, config, device, settings)
    bound = likelihood if likelihood is not None else likelihood_metrics(method, data, config)
    metrics.update(bound[0])
    missing.update(bound[1])
    protocol.update(bound[2])
    metrics["eval_seconds"] = time.time() - t_start
    return {"metrics": metrics, "missing": missing, "protocol": protocol}, grid
