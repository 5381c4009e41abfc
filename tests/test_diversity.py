"""Diversity and memorization metrics (harness/evaluation/diversity.py): density / coverage against the authors' prdc
package, the Vendi score against the authors' vendi-score package, and memorization on generators that copy
their training set or draw fresh samples. Both packages are test-only references."""

import numpy as np
import pytest
import torch

from condgen_bench.harness.evaluation.diversity import (density_coverage, density_coverage_parts, memorization, nearest_train,
                                             train_nn_quantile, vendi_score)


def _gaussian(n, d, seed, shift=0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


# density and coverage


def test_density_coverage_match_prdc():
    prdc = pytest.importorskip("prdc", reason="prdc (Naeem et al.'s reference code) is a test-only extra")
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 16))
    fake = 1.2 * rng.normal(size=(150, 16)) + 0.3
    k = 5
    ref = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
    density, coverage = density_coverage(torch.from_numpy(real), torch.from_numpy(fake), k)
    assert density == pytest.approx(ref["density"], abs=1e-9)
    assert coverage == pytest.approx(ref["coverage"], abs=1e-9)
    per_gen, covered = density_coverage_parts(torch.from_numpy(real), torch.from_numpy(fake), k)
    assert per_gen.shape == (150,) and covered.shape == (200,) and covered.dtype == torch.bool
    assert per_gen.mean().item() == pytest.approx(density, abs=1e-12)
    assert covered.double().mean().item() == pytest.approx(coverage, abs=1e-12)


def test_density_coverage_identical_distributions():
    density, coverage = density_coverage(_gaussian(1000, 8, 0), _gaussian(1000, 8, 1), k=5)
    assert density == pytest.approx(1.0, abs=0.15)
    assert coverage > 0.9


def test_coverage_of_a_collapsed_generator():
    real = _gaussian(1000, 8, 0)
    density, coverage = density_coverage(real, real.mean(0, keepdim=True).expand(1000, 8), k=5)
    assert coverage < 0.05


def test_density_coverage_rejects_k_out_of_range():
    with pytest.raises(ValueError):
        density_coverage(_gaussian(5, 2, 0), _gaussian(5, 2, 1), k=5)


# Vendi score


@pytest.mark.parametrize("n, d", [(300, 16), (20, 64)], ids=["n>d", "n<d"])
def test_vendi_matches_reference(n, d):
    vendi = pytest.importorskip("vendi_score.vendi", reason="vendi-score (Friedman & Dieng's code) is a test-only extra")
    x = np.random.default_rng(n).normal(size=(n, d)) + 0.5  # off-centre: the rows are not near-orthogonal
    assert vendi_score(torch.from_numpy(x)) == pytest.approx(vendi.score_dual(x), abs=1e-6)


def test_vendi_bounds():
    row = _gaussian(1, 12, 0)
    scales = torch.linspace(0.5, 3.0, 50, dtype=torch.float64)[:, None]
    assert vendi_score(scales * row) == pytest.approx(1.0, abs=1e-9)  # identical up to scale
    q, _ = torch.linalg.qr(_gaussian(32, 10, 1))  # 10 orthonormal columns
    assert vendi_score(q.T) == pytest.approx(10.0, abs=1e-9)  # N < D
    assert vendi_score(3 * torch.eye(6, dtype=torch.float64)) == pytest.approx(6.0, abs=1e-9)  # N = D


# memorization


def test_nearest_train_matches_brute_force():
    gen, train = _gaussian(300, 12, 0), _gaussian(2500, 12, 1)
    distances, indices = nearest_train(gen, train, chunk=64)  # several blocks, the last one partial
    brute = torch.cdist(gen, train)
    assert indices.dtype == torch.int64 and indices.shape == (300,)
    assert torch.equal(indices, brute.argmin(dim=1))
    assert (distances - brute.min(dim=1).values).abs().max().item() < 1e-9


def test_train_nn_quantile():
    train = _gaussian(400, 6, 0)
    d = torch.cdist(train, train).fill_diagonal_(float("inf")).min(dim=1).values
    assert train_nn_quantile(train, 0.2) == pytest.approx(torch.quantile(d, 0.2).item(), abs=1e-9)  # every row
    subset = train_nn_quantile(train, 0.2, max_rows=100, seed=3)
    assert subset == train_nn_quantile(train, 0.2, max_rows=100, seed=3)
    assert subset == pytest.approx(torch.quantile(d, 0.2).item(), rel=0.5)
    assert train_nn_quantile(torch.cat([train, train[:100]]), 0.1) == 0.0  # duplicates are at distance 0


def _pixels(features):
    """Stand-in images [N, 2, 2, 2] of features [N, 8], so that pixel and feature distances agree."""
    return features.view(-1, 2, 2, 2)


def test_copies_of_training_images_are_memorized():
    train_pixels = torch.randint(0, 256, (300, 3, 8, 8), generator=torch.Generator().manual_seed(0),
                                 dtype=torch.uint8)
    projection = _gaussian(3 * 8 * 8, 16, 1)
    train_features = train_pixels.flatten(1).double() @ projection
    copied = torch.randperm(300, generator=torch.Generator().manual_seed(2))[:50]
    out = memorization(train_features[copied], train_features, train_pixels[copied], train_pixels)
    assert out["memorized_share"] == 1.0 and out["memorized_threshold"] > 0
    assert out["nn_distance_features"] == 0.0 and out["nn_distance_pixels"] == 0.0
    assert len(out["closest"]) == 8
    for sample, train_index, distance in out["closest"]:
        assert train_index == copied[sample].item() and distance == 0.0
    for key in ("nn_distance_features", "nn_distance_pixels"):
        assert isinstance(out["per_sample"][key], np.ndarray) and out["per_sample"][key].shape == (50,)


def test_fresh_draws_are_rarely_memorized():
    train, gen = _gaussian(2000, 8, 0), _gaussian(500, 8, 1)
    out = memorization(gen, train, _pixels(gen), _pixels(train), q=0.05)
    assert 0 < out["memorized_share"] < 0.2
    assert out["nn_distance_pixels"] == pytest.approx(out["nn_distance_features"], rel=1e-6)  # pixels: float32
    distances = [c[2] for c in out["closest"]]
    assert distances == sorted(distances) and distances[0] == out["per_sample"]["nn_distance_features"].min()
