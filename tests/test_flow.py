"""Conditional flow matching (models/flow.py): the ODE likelihood against Gaussians whose density is known,
the samplers, guidance, resuming, and a tiny model that learns two classes."""

import math

import pytest
import torch

from condgen_bench.datasets.base import DatasetSpec
from condgen_bench.models import build_method
from condgen_bench.models.flow import FlowConfig, integrate, ode_log_likelihood
from condgen_bench.models.unet import UNetConfig

TINY_UNET = UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(), num_heads=2)


def gaussian_velocity(mean: torch.Tensor, cov: torch.Tensor):
    """The exact rectified-flow velocity E[eps - x0 | x_t] for data N(mean, cov) (D dims) and x_t =
    (1 - t) x0 + t eps: (t I - (1 - t) cov) C_t^-1 (x_t - (1 - t) mean) - mean, C_t = (1 - t)^2 cov + t^2 I.
    Returns v(x [B, *shape], t [B]) -> [B, *shape]."""
    eye = torch.eye(len(mean), dtype=torch.float64)

    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1).double()
        out = torch.empty_like(flat)
        for ti in t.double().unique().tolist():  # one linear map per time
            rows = t.double() == ti
            a, b = 1 - ti, ti
            gain = (b * eye - a * cov) @ torch.linalg.inv(a * a * cov + b * b * eye)
            out[rows] = (flat[rows] - a * mean) @ gain.T - mean
        return out.to(x.dtype).view_as(x)

    return v


def gaussian(dims: int, seed: int, isotropic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [D], covariance [D, D]) in float64: a random SPD covariance, or 0.3^2 I."""
    g = torch.Generator().manual_seed(seed)
    mean = 0.5 * torch.randn(dims, generator=g, dtype=torch.float64)
    if isotropic:
        return mean, 0.09 * torch.eye(dims, dtype=torch.float64)
    a = torch.randn(dims, dims, generator=g, dtype=torch.float64)
    return mean, 0.2 * a @ a.T / dims + 0.05 * torch.eye(dims, dtype=torch.float64)


def test_ode_likelihood_of_a_gaussian_equals_its_density():
    """With the exact velocity of a correlated Gaussian, the ODE log-likelihood is log N(x; mean, cov):
    to 3e-3 nats with an exact trace (probes sqrt(D) e_i) and 64 Heun steps, converging at second order,
    and without bias with Rademacher probes."""
    dims = 4
    mean, cov = gaussian(dims, seed=0)
    density = torch.distributions.MultivariateNormal(mean, cov)
    z = torch.randn(32, dims, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x = (mean + z @ torch.linalg.cholesky(cov).T).view(32, 1, 2, 2)  # float64: only the solver's error is left
    expected = density.log_prob(x.flatten(1))
    v = gaussian_velocity(mean, cov)

    exact = math.sqrt(dims) * torch.eye(dims, dtype=torch.float64).view(dims, 1, 1, 2, 2).expand(dims, 32, 1, 2, 2)
    got = ode_log_likelihood(v, x, exact, steps=64)
    error = (got["log_likelihood"] - expected).abs().max()
    assert error < 3e-3, error
    # Heun is second order: half the steps, about four times the error
    coarse = (ode_log_likelihood(v, x, exact, steps=32)["log_likelihood"] - expected).abs().max()
    assert 3 * error < coarse < 6 * error, (coarse, error)
    assert torch.allclose(got["log_prior"] + got["divergence"], got["log_likelihood"])

    g = torch.Generator().manual_seed(1)
    rademacher = torch.randint(0, 2, (64, 32, 1, 2, 2), generator=g).double() * 2 - 1
    noisy = ode_log_likelihood(v, x, rademacher, steps=32)["log_likelihood"]
    error = noisy - expected
    assert error.abs().mean() > 1e-3  # the estimate is noisy: the probes are used
    assert error.mean().abs() < 4 * error.std() / math.sqrt(len(error)) + 5e-3  # and unbiased


def test_integrating_the_gaussian_flow_carries_noise_to_the_data_distribution():
    """Euler and Heun from t = 1 (standard normal) to 0 reach N(mean, cov); Heun with fewer steps."""
    mean, cov = gaussian(4, seed=2)
    v = gaussian_velocity(mean, cov)
    noise = torch.randn(4000, 1, 2, 2, generator=torch.Generator().manual_seed(3))
    for sampler, steps in (("euler", 100), ("heun", 10)):
        x = integrate(v, noise, 1.0, 0.0, steps, sampler).flatten(1).double()
        assert torch.allclose(x.mean(0), mean, atol=0.03), sampler
        assert torch.allclose(torch.cov(x.T), cov, atol=0.03), sampler
    with pytest.raises(ValueError, match="unknown sampler 'rk4'"):
        integrate(v, noise, 1.0, 0.0, 4, "rk4")


def tiny(**changes):
    spec = DatasetSpec("x", 1, 8, ("dark", "light"), "x")
    return build_method("flow", FlowConfig(unet=TINY_UNET, **changes), spec, seed=0)


def test_bits_per_dim_is_the_density_of_the_dequantized_image_on_the_8_bit_scale():
    """The method's figure with the Gaussian's exact velocity in place of the network: minus log N of the
    dequantized image in [-1, 1], plus D log 127.5 for the 8-bit scale, over D ln 2."""
    method = tiny(likelihood_steps=48)
    dims = 64
    mean, cov = gaussian(dims, seed=4, isotropic=True)
    v = gaussian_velocity(mean, cov)
    method.velocity = lambda labels, guidance=1.0: v  # the exact field; the method's dequantization and scale
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(8))
    seeds = torch.tensor([5, 6, 7])
    got = method.bits_per_dim(images, torch.tensor([0, 1, 0]), seeds)
    from condgen_bench.models.noise import NoiseStream

    u = torch.special.ndtr(NoiseStream(seeds, (1, 8, 8)).next())
    x = ((images.float() + u) / 127.5 - 1).flatten(1).double()
    log_p = torch.distributions.MultivariateNormal(mean, cov).log_prob(x)
    expected = -(log_p - dims * math.log(127.5)) / (dims * math.log(2))
    assert torch.allclose(got["total"].double(), expected, rtol=1e-3), (got["total"], expected)
    assert torch.allclose(got["prior"] + got["divergence"], got["total"])
    assert method.likelihood_protocol()["bpd_ode_solver"].startswith("Heun, 48")


def test_samplers_settings_and_guidance():
    method = tiny(sampler="euler", sampling_steps=4, guidance=3.0, ema_decay=0.0, lr=1e-2, warmup_steps=1)
    for _ in range(3):  # away from the zero-initialised output layer
        method.train_step(torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))
    assert method.sampling_settings() == {"sampler": "euler", "steps": 4, "guidance": 3.0}
    assert method.network_evaluations() == 8  # 4 steps, guided: 2 calls each
    assert method.network_evaluations(sampler="heun", steps=3, guidance=1.0) == 6
    labels, seeds = torch.tensor([0, 1, 1, 0, 1]), torch.arange(5) + 100
    images = method.sample(labels, seeds, batch_size=2)
    assert images.shape == (5, 1, 8, 8) and images.dtype == torch.uint8
    # image i depends only on its label, seed and the settings, not on the batch it sits in
    assert torch.equal(images[3:], method.sample(labels[3:], seeds[3:], batch_size=7))
    assert not torch.equal(method.sample(labels, seeds, sampler="heun"), images)
    with pytest.raises(ValueError, match=r"unknown sampler settings \['eta'\] for flow"):
        method.sample(labels, seeds, eta=1.0)
    with pytest.raises(ValueError, match="unknown sampler 'rk4'"):
        FlowConfig(sampler="rk4")
    with pytest.raises(ValueError, match="unknown t_sampling"):
        FlowConfig(t_sampling="cosine")


def test_resumed_training_continues_exactly():
    """A method rebuilt from state_dict takes the same next step as the one that kept going."""
    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    a = tiny(t_sampling="logit_normal")
    a.seed_noise(11)
    a.train_step(images, labels)
    b = tiny(t_sampling="logit_normal")
    b.load_state_dict(a.state_dict())
    assert b.step == 1
    assert torch.equal(a.train_step(images, labels)["loss"], b.train_step(images, labels)["loss"])


def test_a_tiny_flow_learns_two_classes_and_guidance_follows_the_label():
    """Dark images for class 0, light for class 1: after 150 steps the guided samples of each class are
    dark or light, and the likelihood of the training images is far better than at initialisation."""
    torch.manual_seed(0)
    method = tiny(lr=3e-3, warmup_steps=10, ema_decay=0.9, sampling_steps=8, guidance=2.0, likelihood_steps=8)
    labels = torch.tensor([0, 1] * 8)
    images = torch.where(labels.view(-1, 1, 1, 1) == 0, 40, 215).expand(16, 1, 8, 8).to(torch.uint8)
    images = (images.int() + torch.randint(-10, 11, images.shape)).clamp(0, 255).to(torch.uint8)
    before = method.bits_per_dim(images[:4], labels[:4], torch.arange(4))["total"].mean()
    losses = [float(method.train_step(images, labels)["loss"]) for _ in range(150)]
    assert sum(losses[-10:]) < 0.3 * sum(losses[:10])
    samples = method.sample(torch.tensor([0, 1] * 4), torch.arange(8)).float().mean((1, 2, 3))
    assert (samples[0::2] < 100).all() and (samples[1::2] > 155).all(), samples
    after = method.bits_per_dim(images[:4], labels[:4], torch.arange(4))["total"]
    assert torch.isfinite(after).all() and after.mean() < before - 1.0, (before, after)


def test_a_flows_finalist_evaluation_records_its_ode_bound_and_its_own_sampler_axes(tmp_path):
    """What the finalist stage computes for flow matching (harness/evaluation/scoring.py, as harness/finalists.py
    calls it), without Ray: under its own sampler and a sampling-sweep setting of its axes (Heun, 2 steps),
    bits/dim with the ODE's divergence part, and each setting's network evaluations."""
    from condgen_bench import datasets
    from condgen_bench.datasets import DataConfig
    from condgen_bench.harness.config import EvalConfig
    from condgen_bench.harness.evaluation.scoring import evaluate, sampling_grid
    from condgen_bench.harness.evaluation.plan import finalist_plan
    from condgen_bench.harness.config import ExperimentConfig
    from condgen_bench.harness.evaluation.reference import prepare_reference
    from condgen_bench.models.classifier import ClassifierConfig

    data = datasets.load(DataConfig(image_size=16, num_train=70, num_test=35))
    config = ExperimentConfig(method="flow", model=FlowConfig(unet=TINY_UNET, sampling_steps=3, likelihood_steps=2),
                              eval=EvalConfig(final_samples_per_class=2, batch_size=32, bpd_images=4, bootstrap=10,
                                              kid_subsets=3, cas=False, augment=False, inception_at="never",
                                              classifier=ClassifierConfig(width=8, epochs=1),
                                              sampling_sweep={"sampler": ["heun"], "steps": [2]}))
    reference = prepare_reference(data, config.eval, str(tmp_path), log=lambda *_: None)
    method = build_method("flow", config.model, data.spec(), seed=0)
    plan = finalist_plan(config)
    [swept] = sampling_grid(method, plan.sampling_sweep)
    records = {}
    for name, plan_of_record in (("own", plan), ("heun", plan.under(swept))):
        records[name], _ = evaluate(method, data, reference, config.eval, plan_of_record)
    own, heun = records["own"], records["heun"]
    assert (own["protocol"]["sampling"]["sampler"], heun["protocol"]["sampling"]["sampler"]) == ("euler", "heun")
    assert (own["metrics"]["network_evaluations"], heun["metrics"]["network_evaluations"]) == (6, 8)  # guidance: 2 a step
    for record in (own, heun):
        assert math.isfinite(record["metrics"]["bpd"]) and math.isfinite(record["metrics"]["bpd_divergence"])
