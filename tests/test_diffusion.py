"""The diffusion module against closed forms and hand-computed cases."""

import math

import pytest
import torch

from condgen_bench.models.diffusion import (DiffusionConfig, GaussianDiffusion, cosine_betas, discretized_gaussian_log_likelihood,
                              linear_betas, named_betas, normal_kl)
from condgen_bench.models.unet import UNet, UNetConfig

f64 = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
PHI = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731  standard normal CDF


def test_linear_schedule_endpoints_and_rescaling():
    b = linear_betas(1000)
    assert b.dtype == torch.float64 and b.shape == (1000,)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    b100 = linear_betas(100)  # same shape at another T: endpoints scaled by 1000 / T
    assert b100[0].item() == pytest.approx(1e-3) and b100[-1].item() == pytest.approx(0.2)


def test_cosine_schedule_matches_its_alpha_bar():
    T, s = 1000, 0.008
    abar = torch.cumprod(1 - cosine_betas(T), 0)
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 10, 500, 900):
        # abar_t is the product of (1 - beta) up to t, i.e. f(t + 1) / f(0) while no beta is clipped
        assert abar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert cosine_betas(T).max().item() <= 0.999


def test_linear_schedule_refuses_too_few_steps():
    with pytest.raises(ValueError, match="timesteps > 20"):
        linear_betas(20)


def test_unknown_schedule_lists_valid_names():
    with pytest.raises(ValueError, match="cosine.*linear"):
        named_betas("quadratic", 10)


def test_q_sample_moments_match_closed_form():
    d = GaussianDiffusion(DiffusionConfig(timesteps=1000))
    x0 = torch.full((20000, 1, 1, 1), 0.6)
    for step in (0, 250, 999):
        t = torch.full((x0.shape[0],), step)
        xt = d.q_sample(x0, t, torch.randn(x0.shape, generator=torch.Generator().manual_seed(step)))
        abar = torch.cumprod(1 - linear_betas(1000), 0)[step].item()
        assert xt.mean().item() == pytest.approx(math.sqrt(abar) * 0.6, abs=0.02)
        assert xt.var().item() == pytest.approx(1 - abar, rel=0.05, abs=1e-4)
        mean, var, logvar = d.q_mean_variance(x0[:1], t[:1])
        assert mean.item() == pytest.approx(math.sqrt(abar) * 0.6, rel=1e-6)
        assert var.item() == pytest.approx(1 - abar, rel=1e-6)
        assert logvar.item() == pytest.approx(math.log(1 - abar), rel=1e-6)


def test_posterior_is_the_bayes_posterior():
    """q(x_{t-1} | x_t, x_0) from Gaussian conditioning on scalars."""
    d = GaussianDiffusion(DiffusionConfig(timesteps=50, schedule="cosine"))
    t = 20
    beta = d.betas[t].item()
    abar_prev = d.alphas_cumprod_prev[t].item()
    x0, xt = torch.tensor([[[[0.3]]]]), torch.tensor([[[[-0.7]]]])
    # prior x_{t-1} ~ N(sqrt(abar_prev) x0, 1 - abar_prev); likelihood x_t ~ N(sqrt(1 - beta) x_{t-1}, beta)
    prior_var = 1 - abar_prev
    post_var = 1 / (1 / prior_var + (1 - beta) / beta)
    post_mean = post_var * (math.sqrt(abar_prev) * 0.3 / prior_var + math.sqrt(1 - beta) * -0.7 / beta)
    mean, var, _ = d.q_posterior(x0, xt, torch.tensor([t]))
    assert var.item() == pytest.approx(post_var, rel=1e-5)
    assert mean.item() == pytest.approx(post_mean, rel=1e-5)


def test_normal_kl_hand_computed():
    z = torch.zeros(1)
    assert normal_kl(z, z, z, z).item() == 0.0
    assert normal_kl(z + 1, z, z, z).item() == pytest.approx(0.5)  # (mu1 - mu2)^2 / 2
    # KL(N(0, e^2) || N(0, 1)) = (e^2 - 1 - 2) / 2 with log-variance 2
    assert normal_kl(z, z + 2, z, z).item() == pytest.approx(0.5 * (math.exp(2) - 1 - 2))
    assert normal_kl(z, z, z, z + 2).item() == pytest.approx(0.5 * (2 + math.exp(-2) - 1))


def test_discretized_likelihood_hand_computed():
    std = 1 / 255
    log_scale = f64(math.log(std))
    # interior bin at the mean: P = Phi(1) - Phi(-1)
    p = discretized_gaussian_log_likelihood(f64(0.0), f64(0.0), log_scale).exp().item()
    assert p == pytest.approx(PHI(1) - PHI(-1), rel=1e-6)
    # lowest level: the open bin (-inf, -1 + 1/255]
    p = discretized_gaussian_log_likelihood(f64(-1.0), f64(-0.99), log_scale).exp().item()
    assert p == pytest.approx(PHI((-1 + 1 / 255 + 0.99) / std), rel=1e-6)
    # highest level: [1 - 1/255, inf)
    p = discretized_gaussian_log_likelihood(f64(1.0), f64(0.5), f64(0.0)).exp().item()
    assert p == pytest.approx(1 - PHI(1 - 1 / 255 - 0.5), rel=1e-6)


@pytest.mark.parametrize("mean,scale", [(0.1, 0.05), (-0.97, 0.3), (0.99, 0.001), (5.0, 0.5)])
def test_discretized_likelihood_sums_to_one_over_the_256_levels(mean, scale):
    x = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    logp = discretized_gaussian_log_likelihood(x, torch.full_like(x, mean), torch.full_like(x, math.log(scale)))
    assert torch.isfinite(logp).all()
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-6)


def tiny_unet(channels=1, size=8, classes=3):
    """A small UNet with every weight random (the zero-initialised output layers too), so its output
    depends on every input."""
    torch.manual_seed(0)
    net = UNet(channels, channels, classes, size, UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                                                             attention_resolutions=(4,), num_heads=2))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
    return net.eval()


def test_bits_per_dim_of_untrained_model_is_finite_and_positive():
    d = GaussianDiffusion(DiffusionConfig(timesteps=25))
    net = tiny_unet()
    x0 = torch.randint(0, 256, (4, 1, 8, 8)).float() / 127.5 - 1
    out = d.bits_per_dim(net, x0, torch.tensor([0, 1, 2, 0]), torch.arange(4))
    for key in ("total", "prior", "decoder", "kl"):
        assert out[key].shape == (4,) and torch.isfinite(out[key]).all()
    assert (out["total"] > 0).all()
    assert torch.allclose(out["total"], out["prior"] + out["decoder"] + out["kl"])


def test_monte_carlo_bound_is_unbiased_for_the_full_sum():
    d = GaussianDiffusion(DiffusionConfig(timesteps=30))
    net = tiny_unet()
    x0 = torch.randint(0, 256, (2, 1, 8, 8)).float() / 127.5 - 1
    y = torch.tensor([0, 1])
    full = d.bits_per_dim(net, x0, y, torch.arange(2))["total"]
    estimates = torch.stack([d.bits_per_dim(net, x0, y, torch.arange(2) + 100 * r, t_samples=5)["total"]
                             for r in range(1, 41)])
    # the noise draws differ between the two, so compare within the estimator's spread
    spread = estimates.std(0) / math.sqrt(len(estimates))
    assert ((estimates.mean(0) - full).abs() < 4 * spread + 0.02 * full).all()


def toy_net(x, t, y):
    """Elementwise in the batch (bitwise the same for any batch size), depends on x, t and y."""
    return torch.tanh(0.7 * x + 0.01 * t.float()[:, None, None, None] + 0.3 * y.float()[:, None, None, None] - 0.5)


@pytest.mark.parametrize("sampler,steps,eta", [("ddim", 5, 0.0), ("ddim", 4, 1.0), ("ddpm", None, 0.0)])
def test_sampling_does_not_depend_on_batch_size(sampler, steps, eta):
    d = GaussianDiffusion(DiffusionConfig(timesteps=30))
    labels, seeds = torch.tensor([0, 1, 2, 1, 0]), torch.tensor([7, 8, 9, 10, 11])
    kw = dict(null_label=3, sampler=sampler, steps=steps, eta=eta, guidance=2.0)
    whole = d.sample(toy_net, labels, seeds, (1, 8, 8), **kw)
    parts = torch.cat([d.sample(toy_net, labels[i:i + 2], seeds[i:i + 2], (1, 8, 8), **kw) for i in range(0, 5, 2)])
    assert torch.equal(whole, parts)
    reordered = d.sample(toy_net, labels.flip(0), seeds.flip(0), (1, 8, 8), **kw).flip(0)
    assert torch.equal(whole, reordered)
    other = d.sample(toy_net, labels, seeds + 1, (1, 8, 8), **kw)
    assert not torch.allclose(whole, other)


def test_unet_sampling_is_reproducible_and_batch_size_independent_within_rounding():
    d = GaussianDiffusion(DiffusionConfig(timesteps=30))
    torch.manual_seed(0)
    net = UNet(1, 1, 3, 8, UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                                      attention_resolutions=(4,), num_heads=2)).eval()
    torch.nn.init.normal_(net.out.weight, std=0.05)  # the output layer starts at zero: make it speak
    labels, seeds = torch.tensor([0, 1, 2, 1]), torch.arange(4)
    kw = dict(null_label=3, sampler="ddim", steps=5, guidance=1.0)
    whole = d.sample(net, labels, seeds, (1, 8, 8), **kw)
    assert torch.equal(whole, d.sample(net, labels, seeds, (1, 8, 8), **kw))
    parts = torch.cat([d.sample(net, labels[i:i + 1], seeds[i:i + 1], (1, 8, 8), **kw) for i in range(4)])
    assert torch.allclose(whole, parts, atol=1e-4)


def test_guidance_scale_one_is_the_conditional_prediction():
    net = tiny_unet()
    d = GaussianDiffusion(DiffusionConfig(timesteps=30))
    x, t, y = torch.randn(3, 1, 8, 8), torch.tensor([1, 5, 9]), torch.tensor([0, 1, 2])
    with torch.no_grad():
        cond, uncond = net(x, t, y), net(x, t, torch.full_like(y, 3))
        assert torch.allclose(d.guided_output(net, x, t, y, 1.0, 3), cond)
        assert torch.allclose(d.guided_output(net, x, t, y, 0.0, 3), uncond)
        w3 = d.guided_output(net, x, t, y, 3.0, 3)
        assert torch.allclose(w3, uncond + 3 * (cond - uncond), atol=1e-5)


def test_ddim_timesteps_cover_the_range():
    d = GaussianDiffusion(DiffusionConfig(timesteps=100))
    ts = d.ddim_timesteps(10)
    assert ts[0] == 99 and ts[-1] == 0 and len(ts) == 10 and ts == sorted(ts, reverse=True)
    assert d.ddim_timesteps(100) == list(range(99, -1, -1))
    with pytest.raises(ValueError):
        d.ddim_timesteps(101)


def test_training_loss_label_dropout_uses_the_null_label():
    seen = []

    def net(x, t, y):
        seen.append(y.clone())
        return torch.zeros_like(x)

    d = GaussianDiffusion(DiffusionConfig(timesteps=10, schedule="cosine", p_uncond=0.5))
    loss = d.training_loss(net, torch.zeros(400, 1, 4, 4), torch.zeros(400, dtype=torch.long), null_label=7,
                           generator=torch.Generator().manual_seed(0))
    assert loss.shape == (400,)
    frac_null = (seen[0] == 7).float().mean().item()
    assert 0.4 < frac_null < 0.6 and set(seen[0].tolist()) <= {0, 7}
    # a zero prediction's loss is the noise's mean square: about 1
    assert loss.mean().item() == pytest.approx(1.0, abs=0.05)


def test_vp_schedule_is_registered_and_valid_for_few_steps():
    for T in (1, 2, 4, 8):
        abar = torch.cumprod(1 - named_betas("vp", T), 0)
        assert abar.shape == (T,) and (abar[1:] < abar[:-1]).all() and ((abar > 0) & (abar < 1)).all()
        # the last step reaches the SDE's abar(1) = exp(-(0.1 + 19.9 / 2))
        assert abar[-1].item() == pytest.approx(math.exp(-10.05), rel=1e-9)
    with pytest.raises(ValueError, match=">= 1"):
        named_betas("vp", 0)


def test_one_forward_step_after_the_marginal_is_the_marginal():
    """q_sample_pair: x_{t-1} from q(x_{t-1} | x_0) then q_step gives x_t ~ q(x_t | x_0); x_{-1} is x_0."""
    d = GaussianDiffusion(DiffusionConfig(timesteps=4, schedule="vp"))
    n = 20000
    x0 = torch.full((n, 1, 1, 1), 0.6)
    g = torch.Generator().manual_seed(0)
    for step in range(4):
        t = torch.full((n,), step)
        x_prev, xt = d.q_sample_pair(x0, t, torch.randn(x0.shape, generator=g), torch.randn(x0.shape, generator=g))
        abar, abar_prev = d.alphas_cumprod[step].item(), d.alphas_cumprod_prev[step].item()
        assert xt.mean().item() == pytest.approx(math.sqrt(abar) * 0.6, abs=0.02)
        assert xt.var().item() == pytest.approx(1 - abar, rel=0.05)
        assert x_prev.mean().item() == pytest.approx(math.sqrt(abar_prev) * 0.6, abs=0.02)
        if step == 0:
            assert torch.equal(x_prev, x0)
        # the step itself: noiseless, x_t = sqrt(1 - beta_t) x_{t-1}
        beta = d.betas[step].item()
        assert d.q_step(x0[:1], t[:1], torch.zeros(1, 1, 1, 1)).item() == pytest.approx(math.sqrt(1 - beta) * 0.6)


def test_posterior_sample_has_the_posterior_moments_and_no_noise_at_t0():
    d = GaussianDiffusion(DiffusionConfig(timesteps=4, schedule="vp"))
    n = 20000
    x0, xt = torch.full((n, 1, 1, 1), 0.3), torch.full((n, 1, 1, 1), -0.5)
    g = torch.Generator().manual_seed(1)
    for step in range(4):
        t = torch.full((n,), step)
        draws = d.q_posterior_sample(x0, xt, t, torch.randn(x0.shape, generator=g))
        mean, var, _ = d.q_posterior(x0[:1], xt[:1], t[:1])
        assert draws.mean().item() == pytest.approx(mean.item(), abs=0.02)
        assert draws.var().item() == pytest.approx(var.item(), rel=0.05, abs=1e-6)
    assert torch.equal(d.q_posterior_sample(x0, xt, torch.zeros(n, dtype=torch.long), torch.randn(x0.shape)), x0)
