"""Diversity and memorization metrics computed from features (any feature space: the domain classifier's,
Inception's, or flattened pixels). They return plain floats, tensors or numpy arrays; harness/evaluation/fidelity.py
holds FID / KID / IS / precision-recall.

- Density and coverage (Naeem et al., "Reliable Fidelity and Diversity Metrics for Generative Models",
  ICML 2020): each real point gets a ball whose radius is its distance to its k-th nearest other real point.
  Density counts how many real balls each generated sample falls in, divided by k and averaged (about 1
  when the two distributions match, above 1 when samples crowd into dense real regions); coverage is the
  share of real balls that hold at least one generated sample. Unlike precision / recall, neither is
  inflated by real or generated outliers.
- Vendi score (Friedman & Dieng, "The Vendi Score: A Diversity Evaluation Metric for Machine Learning",
  TMLR 2023): exp of the Shannon entropy of the eigenvalues of K / N, with K the cosine-similarity matrix of
  the samples. It is the "effective number of distinct samples": 1 when all are identical, N when they are
  mutually orthogonal. It needs no reference set, so it also compares the real classes themselves.
- Memorization: each generated sample's distance to its nearest training image, in feature and in pixel
  space, and the share of samples closer to the training set than training images are to each other (the
  q-quantile of the training set's own nearest-neighbour distances). Few-shot GANs can copy their
  training shots outright, which FID rewards; and augmenting a classifier's training set with copies of it
  is not augmentation, so a gain from such samples says nothing about the generator.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

NEAREST_CHUNK = 1024  # query rows per distance block: a [1024, T] block keeps memory bounded for large T
MEMORIZATION_CLOSEST = 8  # (sample, train image) pairs that memorization() lists, closest first


def nearest_radius(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each row of ``features`` [n, D] to its k-th nearest other row -> [n]."""
    d = torch.cdist(features, features)
    return d.kthvalue(k + 1, dim=1).values  # the 0 on the diagonal is the first


def density_coverage_parts(real: torch.Tensor, gen: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-sample pieces of density and coverage (Naeem et al. 2020), for bootstrapping them.
    real: [N, D], gen: [M, D], 1 <= k < N. Returns ([M] float64: the number of real k-NN balls holding each
    generated sample, divided by k; [N] bool: does real point i's ball hold a generated sample). Density is
    the mean of the first, coverage the mean of the second. A ball is open (distance < radius), as in the
    authors' code; distances are Euclidean, in float64."""
    if not 1 <= k < len(real):
        raise ValueError(f"k must be in [1, {len(real) - 1}] for {len(real)} real points, got {k}")
    real, gen = real.double(), gen.double()
    inside = torch.cdist(real, gen) < nearest_radius(real, k)[:, None]  # [N, M]
    return inside.sum(dim=0).double() / k, inside.any(dim=1)


def density_coverage(real: torch.Tensor, gen: torch.Tensor, k: int) -> tuple[float, float]:
    """Density and coverage of generated features gen [M, D] against real features real [N, D] with
    k-NN balls (1 <= k < N). Returns (density, coverage)."""
    per_gen, covered = density_coverage_parts(real, gen, k)
    return per_gen.mean().item(), covered.double().mean().item()


def vendi_score(features: torch.Tensor) -> float:
    """Vendi score of order 1 with the cosine kernel (Friedman & Dieng 2023) of features [N, D]: exp of the
    Shannon entropy of the eigenvalues of K / N, K = X X^T of the L2-normalised rows. In [1, N].

    When N > D it uses the D x D matrix X^T X / N, which has the same nonzero eigenvalues. Round-off
    negative eigenvalues are clipped to 0, and zeros are left out of the entropy."""
    x = F.normalize(features.double(), dim=1)  # an all-zero row stays zero, as in the authors' code
    n, d = x.shape
    gram = x.T @ x if n > d else x @ x.T
    values = torch.linalg.eigvalsh(gram / n).clamp_min(0)
    values = values[values > 0]
    return torch.exp(-(values * values.log()).sum()).item()


def _nearest(queries: torch.Tensor, support: torch.Tensor, chunk: int,
             exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's [Q, D] nearest support row [S, D], in blocks of ``chunk`` queries; exclude: [Q] int64,
    a support row that query i may not pick (itself). Returns (distances [Q], indices [Q] int64)."""
    distances, indices = [queries.new_zeros(0)], [torch.zeros(0, dtype=torch.int64, device=queries.device)]
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk]
        d = torch.cdist(q, support)  # [chunk, S]
        if exclude is not None:
            d[torch.arange(len(q), device=d.device), exclude[start:start + chunk]] = float("inf")
        idx = d.argmin(dim=1)
        # the chosen pair's distance recomputed directly: cdist's matrix-product form leaves round-off
        # (about 1e-3 in float32) where a copy should give exactly 0
        distances.append((q - support[idx]).norm(dim=1))
        indices.append(idx)
    return torch.cat(distances), torch.cat(indices)


def _common_float(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """a and b in one floating dtype: their promoted dtype, float32 when that is not floating."""
    dtype = torch.promote_types(a.dtype, b.dtype)
    dtype = dtype if dtype.is_floating_point else torch.float32
    return a.to(dtype), b.to(dtype)


def nearest_train(gen: torch.Tensor, train: torch.Tensor,
                  chunk: int = NEAREST_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Each generated sample's nearest training row. gen: [M, D], train: [T, D]; ``chunk`` generated rows
    at a time. Returns (Euclidean distances [M], training row indices [M] int64)."""
    gen, train = _common_float(gen, train)
    return _nearest(gen, train, chunk)


def train_nn_quantile(train: torch.Tensor, q: float = 0.05, max_rows: int = 5000, seed: int = 0,
                      chunk: int = NEAREST_CHUNK) -> float:
    """The q-quantile of the training rows' distances to their nearest other training row (self excluded;
    an exact duplicate counts as 0). train: [T, D], T >= 2. At most ``max_rows`` rows, a random subset
    seeded by ``seed``, are the queries; each is matched against all T rows."""
    if len(train) < 2:
        raise ValueError(f"train_nn_quantile needs at least 2 training rows, got {len(train)}")
    train = train if train.is_floating_point() else train.float()
    rows = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:max_rows]
    rows = rows.to(train.device)
    distances, _ = _nearest(train[rows], train, chunk, exclude=rows)
    return torch.quantile(distances.double(), q).item()


def memorization(gen_features: torch.Tensor, train_features: torch.Tensor, gen_pixels: torch.Tensor,
                 train_pixels: torch.Tensor, q: float = 0.05, seed: int = 0) -> dict:
    """How close generated samples come to the training set. gen_features: [M, D], train_features: [T, D];
    gen_pixels: [M, C, H, W], train_pixels: [T, C, H, W] (any dtype; flattened to float). q and seed go to
    train_nn_quantile on the training features.

    Returns {"nn_distance_features", "nn_distance_pixels": the mean nearest-train distance in each space;
    "memorized_share": the share of samples whose feature distance is at most "memorized_threshold", the
    training set's own q-quantile; "closest": up to 8 (sample index, train index, feature distance) tuples,
    closest first; "per_sample": {"nn_distance_features": [M], "nn_distance_pixels": [M]} float64 numpy}."""
    feat_dist, feat_idx = nearest_train(gen_features, train_features)
    pix_dist, _ = nearest_train(gen_pixels.flatten(1).float(), train_pixels.flatten(1).float())
    threshold = train_nn_quantile(train_features, q, seed=seed)
    # at most, not below: when duplicates make the threshold 0, copies of training images still count
    memorized = (feat_dist <= threshold).double().mean().item()
    order = torch.argsort(feat_dist, stable=True)[:MEMORIZATION_CLOSEST].tolist()
    closest = [(i, int(feat_idx[i]), float(feat_dist[i])) for i in order]
    per_sample = {"nn_distance_features": feat_dist.double().cpu().numpy(),
                  "nn_distance_pixels": pix_dist.double().cpu().numpy()}
    return {"nn_distance_features": float(np.mean(per_sample["nn_distance_features"])),
            "nn_distance_pixels": float(np.mean(per_sample["nn_distance_pixels"])),
            "memorized_share": memorized, "memorized_threshold": threshold, "closest": closest,
            "per_sample": per_sample}
