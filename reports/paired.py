"""Is a difference between two generators real? Paired tests on what their evaluations kept per sample.

An evaluation scores every generator of a stage on the same seeded samples (sample i: noise seed
eval.seed + i, class i // samples_per_class) against the same real test images, so two records' samples
pair up by index. ``sample_arrays`` and ``bpd_arrays`` keep, beside each record (layout.PER_SAMPLE), what a
paired test needs:

| metric            | kept per sample                       | statistic of a resample idx                  |
|-------------------|---------------------------------------|----------------------------------------------|
| sample_accuracy   | hit [N] (classifier agrees)           | mean of hit[idx]                             |
| fid_domain        | domain features [N, D], the real      | FID of features[idx] against the fixed real  |
|                   | features' mean, trace, sqrt(cov)      | statistics                                   |
| kid_domain        | features [N, D], mean kernel value    | unbiased MMD² of features[idx] against the   |
|                   | with the real features [N]            | real set, less the real-real term (it cancels|
|                   |                                       | in a difference)                             |
| bpd               | bits/dim of each real test image [M]  | mean of bpd[idx]                             |

``paired_difference`` resamples the index set once per bootstrap draw (within each class) and applies the
same indices to both records (a paired bootstrap), giving the difference and its 95% interval: the
difference ± 1.96 standard deviations of the draws; "within noise" means the interval holds 0, which says
the two are not distinguishable at 95%, not that they are equal. Records that do not pair (other seeds, other reference, nothing kept) and
every other metric with a spread column (Inception FID, IS, CAS, ...) get an unpaired interval: the
difference ± 1.96 times the two spreads combined. Nothing kept and no spread: no verdict (None).

The harness writes these arrays (harness/evaluation/scoring.py) and the report reads them (reports/noise.py);
the module sits in reports/, which imports nothing of the harness.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

RESAMPLES = 1000  # paired bootstrap draws
LEVEL = 0.95  # coverage of the interval of a difference
Z = 1.959964  # the normal quantile of an unpaired interval at LEVEL
KID_DEGREE, KID_COEF0 = 3, 1.0  # torch-fidelity's KID kernel: (x.y / D + coef0) ** degree

# metric -> the arrays its paired statistic needs (and whose key must agree between the two records)
PAIRED = {"sample_accuracy": ("hit",), "fid_domain": ("domain_features", "domain_real_mu", "domain_real_trace",
                                                       "domain_real_sqrt"),
          "kid_domain": ("domain_features", "domain_kid_cross"), "bpd": ("bpd",)}
KEYS = {"sample_accuracy": "sample_key", "fid_domain": "sample_key", "kid_domain": "sample_key", "bpd": "bpd_key"}


def digest(*arrays) -> str:
    """A short digest of tensors / arrays (their bytes, shapes and dtypes): equal inputs, equal digest."""
    h = hashlib.sha256()
    for a in arrays:
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def kid_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's polynomial kernel between feature sets x [n, D] and y [m, D] -> [n, m]."""
    return (x @ y.T / x.shape[1] + KID_COEF0) ** KID_DEGREE


def sample_arrays(hits: torch.Tensor, labels: torch.Tensor, seeds: torch.Tensor, features: torch.Tensor,
                  real: torch.Tensor, real_stats, classifier_hash: str) -> dict[str, np.ndarray]:
    """What the paired tests of accuracy, FID and KID keep of one evaluation's samples.
    hits: [N] bool (the classifier's prediction equals the label); labels, seeds: [N]; features: [N, D]
    the samples' domain features (FID's layer); real: [M, D] the real test features; real_stats:
    harness.fidelity.GaussianStats of ``real``. The key names what pairs: the same labels, seeds, real
    features and classifier."""
    gen = features.double().numpy()
    real_np = real.double().numpy()
    cross = np.concatenate([kid_kernel(gen[i:i + 256], real_np).mean(1) for i in range(0, len(gen), 256)])
    return {"hit": hits.numpy().astype(bool), "labels": labels.numpy().astype(np.int64),
            "domain_features": gen.astype(np.float32),
            "domain_kid_cross": cross, "domain_real_mu": real_stats.mu.astype(np.float64),
            "domain_real_trace": np.float64(real_stats.trace), "domain_real_sqrt": real_stats.sqrt.astype(np.float32),
            "sample_key": np.str_(digest(labels, seeds, real, np.frombuffer(classifier_hash.encode(), np.uint8)))}


def bpd_arrays(per_image: torch.Tensor, images: torch.Tensor, seeds: torch.Tensor) -> dict[str, np.ndarray]:
    """What the paired test of bits/dim keeps: each real test image's bits/dim ``per_image`` [M], keyed by
    the images [M, C, H, W] and the seeds of their estimate [M]."""
    return {"bpd": per_image.double().numpy(), "bpd_key": np.str_(digest(images, seeds))}


def fid_of_projection(gen: np.ndarray, projected: np.ndarray, real_mu: np.ndarray, real_trace: float) -> float:
    """FID of generated features gen [n, D] against a Gaussian with mean real_mu [D] and covariance trace
    real_trace, given projected = gen @ sqrt(real covariance) [n, D]: tr sqrt(S_g S_r) is the sum of the
    square roots of the eigenvalues of the centred projection's covariance, an n x n problem when n < D
    (harness/evaluation/fidelity.py scores with it too)."""
    n = len(gen)
    b = projected - projected.mean(0)
    small = b @ b.T / (n - 1) if n <= b.shape[1] else b.T @ b / (n - 1)
    mean = gen.mean(0)
    diff = mean - real_mu
    return float(diff @ diff + ((gen - mean) ** 2).sum() / (n - 1) + real_trace
                 - 2 * np.sqrt(np.clip(np.linalg.eigvalsh(small), 0, None)).sum())


def _draw_counts(idx: np.ndarray, size: int) -> np.ndarray:
    """idx [draws, n] (indices into ``size`` samples) -> [draws, size]: how often each draw takes each sample."""
    counts = np.zeros((len(idx), size))
    np.add.at(counts, (np.arange(len(idx))[:, None], idx), 1.0)
    return counts


def _fid_statistic(a: dict) -> callable:
    """idx [n] or [draws, n] -> FID of a's domain features[idx] against its real statistics: a float, or
    [draws] (every draw's at once: the same algebra as fid_of_projection, batched)."""
    gen = a["domain_features"].astype(np.float64)
    projected = gen @ a["domain_real_sqrt"].astype(np.float64)
    mu, trace = a["domain_real_mu"], float(a["domain_real_trace"])
    squares = (gen ** 2).sum(1)

    def fid(idx: np.ndarray):
        if idx.ndim == 1:
            return fid_of_projection(gen[idx], projected[idx], mu, trace)
        # every draw by how often it takes each sample (counts [draws, N]): weighted moments, D x D problems
        n = idx.shape[1]
        counts = _draw_counts(idx, len(gen))
        mean, mean_p = counts @ gen / n, counts @ projected / n
        spread = (counts @ squares - n * (mean ** 2).sum(1)) / (n - 1)
        scatter = (counts[:, :, None] * projected).transpose(0, 2, 1) @ projected
        cov_p = (scatter - n * mean_p[:, :, None] * mean_p[:, None, :]) / (n - 1)
        roots = np.sqrt(np.clip(np.linalg.eigvalsh(cov_p), 0, None)).sum(1)
        return ((mean - mu) ** 2).sum(1) + spread + trace - 2 * roots
    return fid


def _kid_statistic(a: dict) -> callable:
    """counts [n] or [draws, n] (how often each sample is drawn) -> KID less its real-real term: the
    unbiased mean kernel value among the drawn samples (pairs of distinct draws) minus twice their mean
    kernel value with the real set; a float, or [draws]."""
    gen = a["domain_features"].astype(np.float64)
    gram = kid_kernel(gen, gen)
    diagonal, cross = np.diag(gram).copy(), a["domain_kid_cross"]

    def kid(counts: np.ndarray):
        n = counts.sum(-1)
        pairs = np.einsum("...i,ij,...j->...", counts, gram, counts) - counts @ diagonal
        return pairs / (n * (n - 1)) - 2 * (counts @ cross) / n
    return kid


def _statistic(metric: str, arrays: dict) -> callable:
    """idx [n] or [draws, n] -> the metric on the resampled samples (images for bits/dim): a float, or
    [draws]."""
    if metric == "fid_domain":
        return _fid_statistic(arrays)
    if metric == "kid_domain":
        kid = _kid_statistic(arrays)
        size = len(arrays["domain_features"])

        def counted(idx: np.ndarray):
            out = kid(_draw_counts(np.atleast_2d(idx), size))
            return float(out[0]) if idx.ndim == 1 else out
        return counted
    values = arrays[PAIRED[metric][0]].astype(np.float64)
    return lambda idx: float(values[idx].mean()) if idx.ndim == 1 else values[idx].mean(-1)


def pairs(metric: str, a: dict | None, b: dict | None) -> bool:
    """Can ``metric`` be compared paired between the per-sample arrays ``a`` and ``b``?"""
    if metric not in PAIRED or not a or not b:
        return False
    key = KEYS[metric]
    return all(k in a and k in b for k in (*PAIRED[metric], key)) and str(a[key]) == str(b[key])


@dataclass(frozen=True)
class Difference:
    """value(a) - value(b) with its LEVEL interval [low, high], and how it was computed."""
    value: float
    low: float
    high: float
    method: str  # "paired bootstrap over 700 samples" / "unpaired: ±1.96 combined spreads"

    @property
    def within_noise(self) -> bool:
        return self.low <= 0 <= self.high


def resample(rng: np.random.Generator, n: int, draws: int, groups: np.ndarray | None = None) -> np.ndarray:
    """[draws, n] indices drawn with replacement from range(n); with ``groups`` [n] (each sample's class),
    within each group, so that every draw keeps each class's count (samples are drawn n per class)."""
    if groups is None:
        return rng.integers(0, n, (draws, n))
    out = np.empty((draws, n), dtype=np.int64)
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        out[:, members] = members[rng.integers(0, len(members), (draws, len(members)))]
    return out


def paired_difference(metric: str, a: dict, b: dict, resamples: int = RESAMPLES, seed: int = 0) -> Difference:
    """metric(a) - metric(b) on every sample (``pairs`` must hold) with its LEVEL interval: the difference ±
    Z x the standard deviation of a paired bootstrap of it (the same resampled indices for both, within each
    class where the arrays say the classes). Not the bootstrap's percentiles: resampling with replacement
    duplicates samples, which moves FID by different amounts for generators of different covariances, so
    the percentile interval sits off the observed difference: in a simulation of two generators whose
    expected FIDs differ by a known amount it covered that amount 90.0% of the time, this interval 96.0%
    (tests/test_metrics.py; the basic bootstrap, 2d - quantiles, covered 86% in a larger case where the
    percentile interval covered 79%)."""
    stat_a, stat_b = _statistic(metric, a), _statistic(metric, b)
    n = len(a[PAIRED[metric][0]]) if metric in ("sample_accuracy", "bpd") else len(a["domain_features"])
    groups = a["labels"] if metric != "bpd" and "labels" in a and "labels" in b else None
    rng = np.random.default_rng(seed)
    draws = np.concatenate([stat_a(idx) - stat_b(idx)
                            for idx in (resample(rng, n, min(100, resamples - start), groups)
                                        for start in range(0, resamples, 100))])
    everything = np.arange(n)
    value = stat_a(everything) - stat_b(everything)
    half = Z * float(draws.std(ddof=1))
    what = "test images" if metric == "bpd" else "samples" + (", resampled within each class" if groups is not None else "")
    return Difference(value, value - half, value + half,
                      f"paired bootstrap over the same {n} {what} ({resamples} draws): ±{Z:.2f} × their standard deviation")


def unpaired_difference(a: float, b: float, spread_a: float, spread_b: float) -> Difference | None:
    """a - b with the normal interval of two independent figures with standard errors spread_a and
    spread_b (None when a spread is missing)."""
    if any(x is None or not math.isfinite(float(x)) for x in (a, b, spread_a, spread_b)):
        return None
    half = Z * math.hypot(float(spread_a), float(spread_b))
    diff = float(a) - float(b)
    return Difference(diff, diff - half, diff + half, f"unpaired: ±{Z:.2f} × the two spreads combined")
