"""The diffusion objectives (eps / x0 / v prediction, learned variance with the hybrid loss, importance
sampling of t), the samplers' agreement, and the bound against data whose entropy is known.

Several tests use Gaussian data, x_0 ~ N(MU, S^2) per pixel, for which the exact reverse process is
known in closed form: E[x_0 | x_t] and Var[x_0 | x_t] are those of a joint Gaussian.
"""

import math

import pytest
import torch

from condgen_bench.models.diffusion import DiffusionConfig, GaussianDiffusion, ImportanceSampler
from condgen_bench.models.noise import NoiseStream

MU, S = 0.1, 0.25  # the Gaussian data's mean and standard deviation (in the [-1, 1] scale)


def exact_net(d: GaussianDiffusion, prediction: str = "eps", learned: bool = False, mu=MU, s=S):
    """The exact posterior-mean network for Gaussian data, in the given parameterization; with
    ``learned``, variance channels that give the exact reverse variance Var[x_{t-1} | x_t]."""
    def net(x, t, y):
        abar = d.alphas_cumprod[t].to(x.dtype).view(-1, 1, 1, 1)
        a, b = abar.sqrt(), (1 - abar).sqrt()
        denom = a**2 * s**2 + b**2
        x0 = mu + a * s**2 / denom * (x - a * mu)  # E[x_0 | x_t]
        eps = (x - a * x0) / b  # E[eps | x_t]
        pred = {"eps": eps, "x0": x0, "v": a * eps - b * x0}[prediction]
        if not learned:
            return pred
        var_x0 = s**2 * b**2 / denom  # Var[x_0 | x_t]
        c1 = d.posterior_mean_coef1[t].to(x.dtype).view(-1, 1, 1, 1)
        true_var = d.posterior_variance[t].to(x.dtype).view(-1, 1, 1, 1) + c1**2 * var_x0
        lo = d.log_variance_small[t].to(x.dtype).view(-1, 1, 1, 1)
        hi = d.log_betas[t].to(x.dtype).view(-1, 1, 1, 1)
        frac = (torch.log(true_var) - lo) / (hi - lo)
        return torch.cat([pred, (2 * frac - 1).expand_as(pred)], dim=1)
    return net


# ---------------------------------------------------------------- objectives


def test_training_targets_against_hand_computed_values():
    # linear schedule, T = 1000, t = 0: abar_0 = 1 - 1e-4, so sqrt(abar) = 0.99995 and sqrt(1 - abar) = 0.01
    x0, noise, t = torch.full((1, 1, 1, 1), 0.5), torch.full((1, 1, 1, 1), -1.0), torch.tensor([0])
    cases = {"eps": -1.0, "x0": 0.5, "v": math.sqrt(0.9999) * -1.0 - 0.01 * 0.5}
    for prediction, expected in cases.items():
        d = GaussianDiffusion(DiffusionConfig(prediction=prediction))
        assert d.target(x0, t, noise).item() == pytest.approx(expected, abs=1e-7)
    # another t: abar_t computed here as the product of (1 - beta)
    t = torch.tensor([400])
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.prod(1 - betas[:401]).item()
    d = GaussianDiffusion(DiffusionConfig(prediction="v"))
    assert d.target(x0, t, noise).item() == pytest.approx(math.sqrt(abar) * -1 - math.sqrt(1 - abar) * 0.5, rel=1e-6)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_each_prediction_recovers_x0_and_a_perfect_network_has_zero_loss(prediction):
    d = GaussianDiffusion(DiffusionConfig(timesteps=50, schedule="cosine", prediction=prediction, p_uncond=0.0))
    x0 = torch.rand(6, 1, 4, 4, dtype=torch.float64) * 2 - 1  # float64: eps -> x0 at abar ~ 0 amplifies rounding
    noise = torch.randn(6, 1, 4, 4, dtype=torch.float64)
    t = torch.tensor([0, 5, 10, 25, 40, 49])
    xt = d.q_sample(x0, t, noise)
    assert torch.allclose(d.x0_from_prediction(d.target(x0, t, noise), xt, t), x0, atol=1e-4)

    gen = torch.Generator().manual_seed(0)

    def oracle(x, t_, y):  # answers with the true target of the draw it was given
        return d.target(x0, t_, (x - d.q_sample(x0, t_, torch.zeros_like(x))) /
                        d._gather("sqrt_one_minus_alphas_cumprod", t_, x))

    losses = d.training_losses(oracle, x0, torch.zeros(6, dtype=torch.long), null_label=1, generator=gen)
    assert losses["mse"].abs().max() < 1e-8


def test_hybrid_loss_bound_term_gets_no_gradient_through_the_mean():
    d = GaussianDiffusion(DiffusionConfig(timesteps=40, variance="learned"))
    out = torch.randn(4, 2, 4, 4, requires_grad=True)  # [prediction (1 channel), variance (1 channel)]
    losses = d.training_losses(lambda x, t, y: out, torch.rand(4, 1, 4, 4) * 2 - 1, torch.zeros(4, dtype=torch.long),
                               null_label=1, generator=torch.Generator().manual_seed(1))
    (grad_vb,) = torch.autograd.grad(losses["vb"].sum(), out, retain_graph=True)
    assert torch.all(grad_vb[:, :1] == 0) and grad_vb[:, 1:].abs().sum() > 0
    (grad_mse,) = torch.autograd.grad(losses["mse"].sum(), out, retain_graph=True)
    assert torch.all(grad_mse[:, 1:] == 0) and grad_mse[:, :1].abs().sum() > 0
    # the hybrid loss: mse + lambda * T * vb
    assert torch.allclose(losses["loss"], losses["mse"] + 0.001 * 40 * losses["vb"])


def test_importance_sampling_of_t_keeps_the_objective_unbiased():
    sampler = ImportanceSampler(num_timesteps=5, history=2)
    assert torch.allclose(sampler.probabilities(), torch.full((5,), 0.2, dtype=torch.float64))  # warming up
    terms = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0])
    for _ in range(3):  # more than the history: the newest two are kept
        sampler.update(torch.arange(5), terms)
    p = sampler.probabilities()
    assert p.argmax() == 4 and p.sum().item() == pytest.approx(1.0)
    t, w = sampler.sample(20000, torch.Generator().manual_seed(0), "cpu")
    # E_p[w_t L_t] equals the uniform average of L_t
    assert (w * terms[t]).mean().item() == pytest.approx(terms.mean().item(), rel=0.03)
    assert (torch.bincount(t, minlength=5) / 20000 - p.float()).abs().max() < 0.01
    again = ImportanceSampler(5, history=2)
    again.load_state_dict(sampler.state_dict())
    assert torch.equal(again.probabilities(), p)


# ---------------------------------------------------------------- samplers


def gaussian_samples(d, n, sampler, steps, eta, prediction="eps", learned=False):
    net = exact_net(d, prediction, learned)
    labels = torch.zeros(n, dtype=torch.long)
    return d.sample(net, labels, torch.arange(n) + 1000, (1, 4, 4), null_label=1, sampler=sampler, steps=steps,
                    eta=eta, guidance=1.0)


def test_ddim_eta_one_on_all_steps_matches_ancestral_sampling_in_distribution():
    d = GaussianDiffusion(DiffusionConfig(timesteps=100, schedule="cosine", variance="fixed_small", clip_denoised=False))
    ddim = gaussian_samples(d, 1000, "ddim", 100, 1.0)
    ancestral = gaussian_samples(d, 1000, "ddpm", None, 0.0)
    # 16,000 values each: the standard error of a mean is about 0.002, of a variance about 0.0005
    assert ddim.mean().item() == pytest.approx(ancestral.mean().item(), abs=0.01)
    assert ddim.var().item() == pytest.approx(ancestral.var().item(), rel=0.05)
    for x in (ddim, ancestral):  # and both near the data
        assert x.mean().item() == pytest.approx(MU, abs=0.01) and x.std().item() == pytest.approx(S, rel=0.08)


def test_ddim_eta_zero_is_deterministic_given_the_starting_noise(monkeypatch):
    d = GaussianDiffusion(DiffusionConfig(timesteps=50, schedule="cosine", clip_denoised=False))
    first = gaussian_samples(d, 8, "ddim", 10, 0.0)
    stochastic = gaussian_samples(d, 8, "ddim", 10, 1.0)
    calls = {"n": 0}
    original = NoiseStream.next

    def fresh_after_the_first(self):  # the same x_T, then different noise at every step
        calls["n"] += 1
        return original(self) if calls["n"] == 1 else torch.randn(len(self.generators), *self.shape)

    monkeypatch.setattr(NoiseStream, "next", fresh_after_the_first)
    assert torch.equal(gaussian_samples(d, 8, "ddim", 10, 0.0), first)
    calls["n"] = 0
    assert not torch.allclose(gaussian_samples(d, 8, "ddim", 10, 1.0), stochastic)


def test_the_three_predictions_give_the_same_samples():
    outs = []
    for prediction in ("eps", "x0", "v"):
        d = GaussianDiffusion(DiffusionConfig(timesteps=50, schedule="cosine", prediction=prediction,
                                              clip_denoised=False))
        outs.append(gaussian_samples(d, 16, "ddim", 10, 0.0, prediction))
    assert torch.allclose(outs[0], outs[1], atol=1e-4) and torch.allclose(outs[0], outs[2], atol=1e-4)


def test_respaced_ancestral_sampling_with_learned_variance():
    d = GaussianDiffusion(DiffusionConfig(timesteps=200, schedule="cosine", variance="learned", clip_denoised=False))
    spaced = d.respaced(20)
    kept = spaced.timestep_map
    assert len(kept) == 20 and kept[0] == 0 and kept[-1] == 199
    assert torch.allclose(spaced.alphas_cumprod, d.alphas_cumprod[kept])
    assert d.respaced(200) is d
    seen = []
    base = exact_net(d, learned=True)

    def net(x, t, y):
        seen.extend(t.unique().tolist())
        return base(x, t, y)

    x = d.sample(net, torch.zeros(500, dtype=torch.long), torch.arange(500), (1, 4, 4), null_label=1, sampler="ddpm",
                 steps=20, guidance=1.0)
    assert set(seen) == set(kept.tolist())  # the network sees the trained timesteps
    assert x.mean().item() == pytest.approx(MU, abs=0.02) and x.std().item() == pytest.approx(S, rel=0.1)


# ---------------------------------------------------------------- the bound


def discretized_gaussian_data(n: int, dims: int, seed: int = 0) -> tuple[torch.Tensor, float]:
    """Images [n, 1, sqrt(dims), sqrt(dims)] of N(MU, S^2) pixels rounded to the 256 levels, and the
    entropy of that discrete distribution in bits per dimension."""
    g = torch.Generator().manual_seed(seed)
    side = int(math.isqrt(dims))
    levels = ((torch.randn(n, 1, side, side, generator=g, dtype=torch.float64) * S + MU + 1) * 127.5).round().clamp(0, 255)
    edges = (torch.arange(257, dtype=torch.float64) - 0.5) / 127.5 - 1  # bin k covers [edges[k], edges[k+1])
    cdf = 0.5 * (1 + torch.erf((edges - MU) / (S * math.sqrt(2))))
    cdf[0], cdf[-1] = 0.0, 1.0  # open end bins
    p = cdf[1:] - cdf[:-1]
    entropy = -(p[p > 0] * torch.log2(p[p > 0])).sum().item()
    return (levels / 127.5 - 1).float(), entropy


def test_bound_on_known_entropy_data_is_not_below_the_entropy_and_tight_for_the_exact_model():
    data, entropy = discretized_gaussian_data(256, 64)  # entropy 7.04 bits/dim
    y, seeds = torch.zeros(256, dtype=torch.long), torch.arange(256)
    exact = GaussianDiffusion(DiffusionConfig(timesteps=1000, variance="learned", clip_denoised=False))
    bpd = exact.bits_per_dim(exact_net(exact, learned=True), data, y, seeds)["total"]
    mean, stderr = bpd.mean().item(), bpd.std().item() / math.sqrt(len(bpd))
    assert stderr < 0.02
    assert mean > entropy - 3 * stderr  # a bound: never below the entropy
    assert mean - entropy < 0.1  # and tight when the reverse process is exact (measured: 0.023)
    # the exact mean with a fixed variance, and an offset mean: looser bounds, compared image by image
    # under the same noise, on the first 64 images (the gaps measured 11 and 5.6 standard errors on 48)
    k = 64
    for config, net_kw in ((dict(variance="fixed_large"), {}), (dict(variance="learned"), dict(mu=MU + 0.05))):
        d = GaussianDiffusion(DiffusionConfig(timesteps=1000, clip_denoised=False, **config))
        worse = d.bits_per_dim(exact_net(d, learned=config["variance"] == "learned", **net_kw), data[:k], y[:k],
                               seeds[:k])
        gap = worse["total"] - bpd[:k]
        assert gap.mean() > 3 * gap.std() / math.sqrt(len(gap)), config
