"""The sample-quality metrics computed from features and predictions: FID (raw, with its bootstrap
spread, and FID∞ corrected for sample size), intra-class FID, KID, IS, precision / recall, accuracy.
They are computed here, on features made by harness/evaluation/extractors.py: FID, KID and IS as torch-fidelity defines
them (the same estimators and, for KID's subsets and IS's shuffle, the same seeded draws, so the figures match
theirs: tests/test_metrics.py checks it), without importing it, which would cost a worker process 1.7 s (it
imports torchvision).

FID is biased upward by a finite sample, by an amount that depends on the number of samples N and on
the generator, so that two generators can swap places between N = 224 and N = 50,000 (Chong & Forsyth,
"Effectively Unbiased FID and Inception Score and where to find them", CVPR 2020). ``fid_infinity``
follows their estimate: FID at several subset sizes N_i, a line fitted in 1/N_i, and its value at
1/N = 0. The reference set's own finite size still biases both figures, so it is recorded with them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from condgen_bench.harness.evaluation.diversity import density_coverage_parts, nearest_radius, vendi_score
from condgen_bench.harness.evaluation.extractors import Extractor
from condgen_bench.reports.paired import fid_of_projection

FID_INF_POINTS = 10  # subset sizes of FID∞'s fit, evenly spaced from N / 10 to N (Chong & Forsyth's range)
FID_INF_DRAWS = 5  # random subsets per size below N, their FIDs averaged
# FID∞'s line in 1/N holds only where every subset is well above the feature dimension D (its bias is then
# ~ tr(S) / N); below, the covariance estimates are rank-deficient and the fit extrapolates a curve
# (D = 512, N = 175: it removed 12% of the bias). So FID∞ is missing where its smallest subset is below
# FID_INF_MIN_RATIO x D: a figure with an unknown error is not shown as if it were comparable
FID_INF_MIN_RATIO = 2
KID_DEGREE, KID_COEF0 = 3, 1.0  # KID's polynomial kernel (x.y / D + 1)^3 (Binkowski et al. 2018)
# The k-NN figures (precision / recall, density / coverage) and intra-class FID depend on the sizes of both
# sets (identical distributions: precision 0.69 against a real set 4x the generated one, 0.77 at equal
# sizes), so they compare equal-size sets: the larger one cut to the smaller's size by this many seeded
# subsets, the figure averaged over them (one draw where the sizes are equal)
EQUAL_SIZE_DRAWS = 5
VENDI_HALVES = 10  # seeded half-samples whose Vendi scores give its spread (their std / sqrt 2)


def accuracy(probs: torch.Tensor, labels: torch.Tensor, class_names,
             valid: torch.Tensor | None = None) -> tuple[float, dict[str, float]]:
    """Overall and per-class accuracy of argmax predictions. probs: [N, K]; labels: [N]; valid: [N] bool,
    False for a sample that is a miss whatever its prediction (a non-finite generated image)."""
    hit = probs.argmax(1) == labels
    if valid is not None:
        hit = hit & valid
    hit = hit.float()
    per_class = {name: hit[labels == k].mean().item() if (labels == k).any() else float("nan")
                 for k, name in enumerate(class_names)}
    return hit.mean().item(), per_class


def fid_traces(gen: np.ndarray, real_mu: np.ndarray, real_trace: float, real_sqrt: np.ndarray) -> float:
    """FID of generated features ``gen`` [n, D] against a Gaussian with mean ``real_mu`` [D], covariance
    trace ``real_trace`` and symmetric square root ``real_sqrt`` [D, D] of the covariance.

    The same value as torch-fidelity's formula, cheaper when n < D: with A the centered gen features,
    tr sqrt(S_g S_r) = sum sqrt(eig((A R)(A R)^T / (n - 1))), R = sqrt(S_r), an n x n problem."""
    return _fid_projected(gen, gen @ real_sqrt, real_mu, real_trace)


def _fid_projected(gen: np.ndarray, projected: np.ndarray, real_mu: np.ndarray, real_trace: float) -> float:
    """fid_traces with the projection gen @ real_sqrt [n, D] given: the features' mean drops out of the
    centered projection, so subsets of one generated set share a single projection (the formula lives in
    reports/paired.py, whose paired bootstrap resamples it too)."""
    return fid_of_projection(gen, projected, real_mu, real_trace)


def psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix [D, D] (negative round-off eigenvalues clipped)."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def bootstrap_std(statistic, n: int, repeats: int, seed: int) -> float:
    """Std of ``statistic(indices)`` over ``repeats`` resamples of range(n) with replacement (NaN if
    repeats < 2). statistic: int64 array [n] -> float."""
    if repeats < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    return float(np.std([statistic(rng.integers(0, n, n)) for _ in range(repeats)], ddof=1))


def manifold_hits(queries: torch.Tensor, support: torch.Tensor, k: int) -> torch.Tensor:
    """For each query [m, D]: is it inside some support point's k-NN ball (Kynkaanniemi et al. 2019)?
    support [n, D] -> [m] bool. Precision: queries = generated, support = real; recall: the reverse."""
    radius = nearest_radius(support, k)
    return (torch.cdist(queries, support) <= radius[None, :]).any(dim=1)


@dataclass(frozen=True)
class GaussianStats:
    """A real feature set summarised for FID against many generated sets: mean [D], covariance trace,
    and the covariance's symmetric square root [D, D] (computed once)."""

    mu: np.ndarray
    trace: float
    sqrt: np.ndarray
    n: int  # features it was computed from

    @classmethod
    def of(cls, features: torch.Tensor | np.ndarray) -> "GaussianStats":
        """features: [n, D] (n >= 2)."""
        features = torch.as_tensor(features, dtype=torch.float64).numpy()
        sigma = np.cov(features, rowvar=False)  # unbiased (n - 1), as torch-fidelity's
        return cls(features.mean(0), float(np.trace(sigma)), psd_sqrt(sigma), len(features))

    def fid(self, gen: np.ndarray) -> float:
        """FID of generated features gen [n, D] (n >= 2) against these statistics."""
        return fid_traces(gen, self.mu, self.trace, self.sqrt)

    def subset_fid(self, gen: np.ndarray):
        """idx -> FID of gen[idx] (idx: int array of >= 2 rows), for many subsets or resamples of one
        generated set gen [n, D]: its projection on the real covariance's square root is computed once."""
        projected = gen @ self.sqrt
        return lambda idx: _fid_projected(gen[idx], projected[idx], self.mu, self.trace)


def fid_sizes(n: int, points: int = FID_INF_POINTS) -> list[int]:
    """The subset sizes of FID∞'s fit for n samples: ``points`` sizes evenly spaced from max(2, n // 10) to n."""
    return sorted(set(np.linspace(max(2, n // 10), n, points).round().astype(int).tolist()))


def fid_inf_out_of_range(n: int, dim: int) -> str | None:
    """Why FID∞ of n generated samples in dim-dimensional features is not valid (its smallest subset below
    FID_INF_MIN_RATIO x dim), or None where it is."""
    smallest = fid_sizes(n)[0]
    if smallest >= FID_INF_MIN_RATIO * dim:
        return None
    return (f"out of FID∞'s range: its smallest subset ({smallest} of {n} samples) is below {FID_INF_MIN_RATIO} x "
            f"the feature dimension ({dim}), where its 1/N line does not hold; KID is unbiased at this size "
            f"(FID∞ needs >= {FID_INF_MIN_RATIO * dim * 10} samples)")


def fid_infinity(gen: np.ndarray, real: GaussianStats, points: int = FID_INF_POINTS, draws: int = FID_INF_DRAWS,
                 seed: int = 0) -> tuple[float, list[int]]:
    """FID extrapolated to infinitely many generated samples (Chong & Forsyth 2020): the mean FID of
    ``draws`` random subsets (without replacement) of each size from ``fid_sizes``, a least-squares line in
    1 / size, and its intercept. gen: [N, D] generated features. Returns (FID∞, the sizes used)."""
    n = len(gen)
    sizes = fid_sizes(n, points)
    if len(sizes) < 2:
        return float("nan"), sizes
    rng = np.random.default_rng(seed)
    fid = real.subset_fid(gen)
    values = [fid(np.arange(n)) if size == n else
              float(np.mean([fid(rng.choice(n, size, replace=False)) for _ in range(draws)]))
              for size in sizes]
    slope, intercept = np.polyfit(1.0 / np.array(sizes, dtype=np.float64), np.array(values), 1)
    return float(intercept), sizes


def equal_size_draws(n_gen: int, n_real: int, draws: int = EQUAL_SIZE_DRAWS,
                     seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Row indices (generated [s], real [s]) of equal-size sets, s = min(n_gen, n_real): the smaller set whole
    and the larger one cut to its size by ``draws`` seeded subsets without replacement (one draw, both whole,
    where the sizes are equal)."""
    size = min(n_gen, n_real)
    if n_gen == n_real:
        return [(np.arange(size), np.arange(size))]
    rng = np.random.default_rng(seed)
    cut = [np.sort(rng.choice(max(n_gen, n_real), size, replace=False)) for _ in range(draws)]
    return [(c, np.arange(size)) if n_gen > n_real else (np.arange(size), c) for c in cut]


def intra_class_fid(gen: torch.Tensor, gen_labels: torch.Tensor, real: torch.Tensor, real_labels: torch.Tensor,
                    class_names, seed: int = 0) -> tuple[float, dict[str, float]]:
    """The mean over classes of each class's FID between its generated and its real features, on
    equal-size sets (``equal_size_draws``, the FIDs averaged over the draws), so that a class's figure does
    not depend on how many real images it has. gen: [N, D], gen_labels: [N]; real: [M, D], real_labels: [M].
    A class with fewer than 2 images on either side gets NaN and is left out of the mean.
    Returns (mean, {class: FID})."""
    per_class = {}
    for k, name in enumerate(class_names):
        g, r = gen[gen_labels == k].double().numpy(), real[real_labels == k]
        if len(g) < 2 or len(r) < 2:
            per_class[name] = float("nan")
            continue
        per_class[name] = float(np.mean([GaussianStats.of(r[ri]).fid(g[gi])
                                         for gi, ri in equal_size_draws(len(g), len(r), seed=seed + k)]))
    values = [v for v in per_class.values() if not np.isnan(v)]
    return (float(np.mean(values)) if values else float("nan")), per_class


def kid_subset(size: int, n_gen: int, n_real: int) -> int:
    """KID's subset size: ``size``, at most half of either set (at least 2), so that its random subsets
    differ and their spread (kid_std) says something: a subset of every sample is the same each time."""
    return max(2, min(size, n_gen // 2, n_real // 2))


def kid(gen: np.ndarray, real: np.ndarray, subsets: int, subset_size: int, seed: int) -> tuple[float, float]:
    """Kernel Inception Distance of gen [n, D] against real [m, D] features (subset_size <= n, m): the unbiased
    squared MMD under the kernel (x.y / D + 1)^3, on ``subsets`` pairs of random subsets (without
    replacement) of ``subset_size`` rows each. Returns (its mean, its std over the subsets).

    The subsets are drawn as torch-fidelity draws them (a RandomState, a generated then a real subset per
    pair), so the figure equals theirs for the same seed."""
    rng = np.random.RandomState(seed)
    dim = gen.shape[1]
    m = subset_size
    values = []
    for _ in range(subsets):
        x = gen[rng.choice(len(gen), m, replace=False)]
        y = real[rng.choice(len(real), m, replace=False)]
        k_xx, k_yy, k_xy = ((a @ b.T / dim + KID_COEF0) ** KID_DEGREE for a, b in ((x, x), (y, y), (x, y)))
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        values.append(within - 2 * k_xy.sum() / (m * m))
    return float(np.mean(values)), float(np.std(values))


def inception_score(logits: torch.Tensor, splits: int, seed: int) -> tuple[float, float]:
    """Inception Score of class logits [N, K]: the rows shuffled (seeded, as torch-fidelity shuffles them) and
    cut into ``splits`` parts; in each, exp of the mean KL divergence between a row's class distribution p(y|x)
    and the part's marginal p(y). Returns (its mean, its std over the parts)."""
    n = len(logits)
    logits = logits[np.random.RandomState(seed).permutation(n)].double()
    log_p = logits.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        part = log_p[i * n // splits:(i + 1) * n // splits]
        log_marginal = part.exp().mean(dim=0, keepdim=True).log()
        scores.append((part.exp() * (part - log_marginal)).sum(dim=1).mean().exp().item())
    return float(np.mean(scores)), float(np.std(scores))


def vendi_with_spread(features: torch.Tensor, halves: int = VENDI_HALVES, seed: int = 0) -> tuple[float, float]:
    """The Vendi score of features [N, D] (harness/evaluation/diversity.py) and its half-sample standard error: the std
    of the score over ``halves`` seeded halves of the rows, / sqrt 2 (a half has twice the full set's variance
    for a smooth statistic). NaN spread below 4 rows."""
    score = vendi_score(features)
    if len(features) < 4:
        return score, float("nan")
    rng = np.random.default_rng(seed)
    half = len(features) // 2
    scores = [vendi_score(features[np.sort(rng.choice(len(features), half, replace=False))]) for _ in range(halves)]
    return score, float(np.std(scores, ddof=1) / np.sqrt(2))


def neighbourhood_metrics(gen: torch.Tensor, real: torch.Tensor, k: int, seed: int = 0) -> dict[str, float]:
    """Precision / recall (Kynkaanniemi et al. 2019) and density / coverage (Naeem et al. 2020) of
    generated features gen [N, D] against real ones real [M, D], on equal-size sets (``equal_size_draws``),
    each averaged over the draws, with k-NN balls of k neighbours (k <= min(N, M) - 1).

    Each figure's spread ("<name>_std") is its standard error: the sampling error of one draw (binomial
    for the shares, the per-sample spread / sqrt n for density) combined with the spread between the draws
    / sqrt draws (which carries the k-NN radii's dependence on the real subset)."""
    draws = equal_size_draws(len(gen), len(real), seed=seed)
    parts: dict[str, list[tuple[float, float]]] = {"precision": [], "recall": [], "density": [], "coverage": []}
    for gi, ri in draws:
        g, r = gen[torch.as_tensor(gi)], real[torch.as_tensor(ri)]
        n = len(gi)
        for name, hits in (("precision", manifold_hits(g, r, k)), ("recall", manifold_hits(r, g, k))):
            p = hits.double().mean().item()
            parts[name].append((p, float(np.sqrt(p * (1 - p) / n))))
        per_gen, covered = density_coverage_parts(r, g, k)
        parts["density"].append((per_gen.mean().item(), per_gen.std().item() / np.sqrt(n)))
        c = covered.double().mean().item()
        parts["coverage"].append((c, float(np.sqrt(c * (1 - c) / n))))
    out = {}
    for name, pieces in parts.items():
        values, errors = np.array(pieces).T
        between = np.var(values, ddof=1) / len(values) if len(values) > 1 else 0.0
        out[name], out[f"{name}_std"] = float(values.mean()), float(np.sqrt(np.mean(errors ** 2) + between))
    return out


def score_features(gen: dict[str, torch.Tensor], real: dict[str, torch.Tensor], extractor: Extractor, *,
                   kid_subset_size: int, kid_subsets: int, isc_splits: int, prc_neighborhood: int = 3,
                   bootstrap: int = 0, seed: int = 0) -> tuple[dict[str, float], dict[str, str]]:
    """FID, KID, IS and precision / recall of generated features against real ones, with spreads.

    gen, real: {layer: [N, D]} from ``extract_features``. Returns ({metric: value}, {metric: reason missing})
    with keys fid, fid_std (bootstrap over the generated samples, ``bootstrap`` resamples), fid_inf (FID∞,
    ``fid_infinity``; missing where ``fid_inf_out_of_range``), kid, kid_std (over KID's subsets, of size ``kid_subset``), is,
    is_std (one split's std) and is_se (the standard error of their mean), precision, recall, density, coverage and their standard errors
    (``neighbourhood_metrics``, on equal-size sets), vendi and its standard error (``vendi_with_spread``, of
    the generated features alone)."""
    out: dict[str, float] = {}
    missing: dict[str, str] = {}
    g, r = gen[extractor.layer("fid")], real[extractor.layer("fid")]
    real_stats, g_np = GaussianStats.of(r), g.double().numpy()
    out["fid"] = real_stats.fid(g_np)
    out_of_range = fid_inf_out_of_range(len(g_np), g_np.shape[1])
    if out_of_range:
        missing["fid_inf"] = out_of_range
    else:
        out["fid_inf"], _ = fid_infinity(g_np, real_stats, seed=seed)
    if bootstrap >= 2:
        out["fid_std"] = bootstrap_std(real_stats.subset_fid(g_np), len(g_np), bootstrap, seed)
    g, r = gen[extractor.layer("kid")], real[extractor.layer("kid")]
    out["kid"], out["kid_std"] = kid(g.double().numpy(), r.double().numpy(), kid_subsets,
                                     kid_subset(kid_subset_size, len(g), len(r)), seed)
    layer = extractor.layer("isc")
    if layer is None:
        missing["is"] = missing["is_std"] = missing["is_se"] = f"{extractor.name} has no logits"
    else:
        splits = min(isc_splits, len(gen[layer]))
        out["is"], out["is_std"] = inception_score(gen[layer], splits, seed)
        out["is_se"] = out["is_std"] / np.sqrt(splits)  # the mean over splits: one split's std / sqrt(splits)
    g, r = gen[extractor.layer("prc")], real[extractor.layer("prc")]
    out.update(neighbourhood_metrics(g, r, min(prc_neighborhood, len(g) - 1, len(r) - 1), seed))
    out["vendi"], out["vendi_std"] = vendi_with_spread(g, seed=seed)
    return out, missing
