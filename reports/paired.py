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

``paired_difference`` resamples the index set once per bootstrap draw and applies the same indices to both
records (a paired bootstrap), giving the difference and its 95% percentile interval; "within noise"
means the interval holds 0. Records that do not pair (other seeds, other reference, nothing kept) and
every other metric with a spread column (Inception FID, IS, CAS, ...) get an unpaired interval: the
difference ± 1.96 times the two spreads combined. Nothing kept and no spread: no verdict (None).

The harness writes these arrays (harness/evaluation.py) and the report reads them (reports/noise.py);
the module sits in reports/, which imports nothing of the harness.
"""

from __future__ import annotations

import hashlib
import io
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
    return {"hit": hits.numpy().astype(bool), "domain_features": gen.astype(np.float32),
            "domain_kid_cross": cross, "domain_real_mu": real_stats.mu.astype(np.float64),
            "domain_real_trace": np.float64(real_stats.trace), "domain_real_sqrt": real_stats.sqrt.astype(np.float32),
            "sample_key": np.str_(digest(labels, seeds, real, np.frombuffer(classifier_hash.encode(), np.uint8)))}


def bpd_arrays(per_image: torch.Tensor, images: torch.Tensor, seeds: torch.Tensor) -> dict[str, np.ndarray]:
    """What the paired test of bits/dim keeps: each real test image's bits/dim ``per_image`` [M], keyed by
    the images [M, C, H, W] and the seeds of their estimate [M]."""
    return {"bpd": per_image.double().numpy(), "bpd_key": np.str_(digest(images, seeds))}


def to_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz file of ``arrays`` (compressed)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def from_bytes(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def fid_of_projection(gen: np.ndarray, projected: np.ndarray, real_mu: np.ndarray, real_trace: float) -> float:
    """FID of generated features gen [n, D] against a Gaussian with mean real_mu [D] and covariance trace
    real_trace, given projected = gen @ sqrt(real covariance) [n, D]: tr sqrt(S_g S_r) is the sum of the
    square roots of the eigenvalues of the centred projection's covariance, an n x n problem when n < D
    (harness/fidelity.py scores with it too)."""
    n = len(gen)
    b = projected - projected.mean(0)
    small = b @ b.T / (n - 1) if n <= b.shape[1] else b.T @ b / (n - 1)
    mean = gen.mean(0)
    diff = mean - real_mu
    return float(diff @ diff + ((gen - mean) ** 2).sum() / (n - 1) + real_trace
                 - 2 * np.sqrt(np.clip(np.linalg.eigvalsh(small), 0, None)).sum())


def _fid_statistic(a: dict) -> callable:
    """idx [n] -> FID of a's domain features[idx] against its real statistics."""
    gen = a["domain_features"].astype(np.float64)
    projected = gen @ a["domain_real_sqrt"].astype(np.float64)
    mu, trace = a["domain_real_mu"], float(a["domain_real_trace"])
    return lambda idx: fid_of_projection(gen[idx], projected[idx], mu, trace)


def _kid_statistic(a: dict) -> callable:
    """counts [n] (how often each sample is drawn) -> KID less its real-real term: the unbiased mean
    kernel value among the drawn samples (pairs of distinct draws) minus twice their mean kernel value
    with the real set."""
    gen = a["domain_features"].astype(np.float64)
    gram = kid_kernel(gen, gen)
    diagonal, cross = np.diag(gram).copy(), a["domain_kid_cross"]

    def kid(counts: np.ndarray) -> float:
        n = counts.sum()
        pairs = counts @ gram @ counts - counts @ diagonal
        return float(pairs / (n * (n - 1)) - 2 * (counts @ cross) / n)
    return kid


def _statistic(metric: str, arrays: dict) -> callable:
    """idx [n] -> the metric on the resampled samples (images for bits/dim)."""
    if metric == "fid_domain":
        return _fid_statistic(arrays)
    if metric == "kid_domain":
        kid = _kid_statistic(arrays)
        size = len(arrays["domain_features"])
        return lambda idx: kid(np.bincount(idx, minlength=size).astype(np.float64))
    values = arrays[PAIRED[metric][0]].astype(np.float64)
    return lambda idx: float(values[idx].mean())


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


def paired_difference(metric: str, a: dict, b: dict, resamples: int = RESAMPLES, seed: int = 0) -> Difference:
    """The paired bootstrap of metric(a) - metric(b) (``pairs`` must hold): the same resampled indices
    for both, the difference of the full sets and the percentile interval over ``resamples`` draws."""
    stat_a, stat_b = _statistic(metric, a), _statistic(metric, b)
    n = len(a[PAIRED[metric][0]]) if metric in ("sample_accuracy", "bpd") else len(a["domain_features"])
    everything = np.arange(n)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        draws.append(stat_a(idx) - stat_b(idx))
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    what = "test images" if metric == "bpd" else "samples"
    return Difference(stat_a(everything) - stat_b(everything), float(low), float(high),
                      f"paired bootstrap over the same {n} {what} ({resamples} draws)")


def unpaired_difference(a: float, b: float, spread_a: float, spread_b: float) -> Difference | None:
    """a - b with the normal interval of two independent figures with standard errors spread_a and
    spread_b (None when a spread is missing)."""
    if any(x is None or not math.isfinite(float(x)) for x in (a, b, spread_a, spread_b)):
        return None
    half = Z * math.hypot(float(spread_a), float(spread_b))
    diff = float(a) - float(b)
    return Difference(diff, diff - half, diff + half, f"unpaired: ±{Z:.2f} × the two spreads combined")
