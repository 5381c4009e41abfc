"""The denoising diffusion GAN: its schedule, the latent UNet, the networks' shapes, training steps, the R1
penalty, seeded sampling and checkpoints. Tiny networks on the CPU."""

import math

import pytest
import torch

from condgen_bench.datasets import FER_EMOTIONS, DatasetSpec
from condgen_bench.models.ddgan import DDGANConfig, DDGANGenerator, DDGANMethod, PairDiscriminator, r1_penalty
from condgen_bench.models.diffusion import DiffusionConfig, GaussianDiffusion, vp_betas
from condgen_bench.models.unet import UNet, UNetConfig

TINY_UNET = UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(), num_heads=2)


def tiny_ddgan(channels=1, size=24, seed=0, **overrides) -> DDGANMethod:
    spec = DatasetSpec("toy", channels, size, FER_EMOTIONS[:3], "fp")
    config = DDGANConfig(unet=TINY_UNET, ndf=8, z_dim=8, timesteps=4, **overrides)
    return DDGANMethod(config, spec, seed=seed)


def toy_batch(channels=1, size=24, n=8):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8), torch.arange(n) % 3


def randomize_(net: torch.nn.Module, std=0.2) -> torch.nn.Module:
    """Every weight random (the zero-initialised output layers too), so outputs depend on every input."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, std)
    return net


# ---------------------------------------------------------------------------------------------
# The process


@pytest.mark.parametrize("T", range(2, 9))
def test_vp_schedule_is_the_discretized_sde(T):
    abar = torch.cumprod(1 - vp_betas(T), 0)
    assert abar.shape == (T,) and ((abar > 0) & (abar < 1)).all() and (abar[1:] < abar[:-1]).all()
    for i in (1, T):  # abar at s = i / T: exp(-(0.1 s + 19.9 s^2 / 2))
        s = i / T
        assert abar[i - 1].item() == pytest.approx(math.exp(-(0.1 * s + 9.95 * s * s)), rel=1e-9)
    assert GaussianDiffusion(DiffusionConfig(timesteps=T, schedule="vp")).num_timesteps == T


def test_vp_schedule_hand_checked_point():
    # T = 4, first step: s = 1/4, 0.1 / 4 + 19.9 / 32 = 0.646875
    assert (1 - vp_betas(4)[0]).item() == pytest.approx(math.exp(-0.646875), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Networks


def test_unet_without_latent_is_unchanged():
    torch.manual_seed(0)
    plain = UNet(1, 1, 3, 8, TINY_UNET)
    torch.manual_seed(0)
    zero = UNet(1, 1, 3, 8, TINY_UNET, latent_dim=0)
    assert list(plain.state_dict()) == list(zero.state_dict())
    randomize_(plain)
    randomize_(zero)
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([0, 3]), torch.tensor([1, 2])
    with torch.no_grad():
        assert torch.equal(plain(x, t, y), zero(x, t, y))
    with pytest.raises(ValueError, match="no z"):
        zero(x, t, y, torch.randn(2, 4))


def test_unet_with_latent_keeps_shapes_and_depends_on_z():
    net = randomize_(UNet(3, 3, 3, 16, TINY_UNET, latent_dim=5))
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([0, 3]), torch.tensor([1, 2])
    z = torch.randn(2, 5)
    with torch.no_grad():
        out = net(x, t, y, z)
        assert out.shape == x.shape
        assert not torch.allclose(out, net(x, t, y, torch.randn(2, 5)))
    with pytest.raises(ValueError, match="z is required"):
        net(x, t, y)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [24, 32, 48])
def test_generator_and_discriminator_shapes(channels, size):
    G = DDGANGenerator(channels, 3, size, 8, TINY_UNET)
    D = PairDiscriminator(channels, 3, size, ndf=8)
    x, t, y, z = torch.randn(2, channels, size, size), torch.tensor([0, 3]), torch.tensor([0, 2]), torch.randn(2, 8)
    with torch.no_grad():
        x0 = randomize_(G)(x, t, y, z)
        assert x0.shape == x.shape and x0.abs().max() < 1  # tanh
        assert D(x, x0, t, y).shape == (2,)


def test_discriminator_spectral_norm_is_optional():
    x, t, y = torch.randn(2, 1, 24, 24), torch.tensor([0, 3]), torch.tensor([0, 2])
    plain, normed = PairDiscriminator(1, 3, 24, ndf=8), PairDiscriminator(1, 3, 24, ndf=8, spectral=True)
    layers = [m for m in normed.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.Embedding))]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)
    assert not any(hasattr(m, "parametrizations") for m in plain.modules())
    assert normed(x, x, t, y).shape == (2,)


# ---------------------------------------------------------------------------------------------
# Training


def test_r1_is_lazy():
    method = tiny_ddgan(r1_every=2, lr=1e-3, d_lr=1e-3)
    images, labels = toy_batch()
    steps = [method.train_step(images, labels) for _ in range(3)]
    assert "r1" in steps[0] and "r1" not in steps[1] and "r1" in steps[2]  # lazy: steps 0 and 2
    assert steps[0]["r1"] > 0 and math.isfinite(steps[0]["r1"])


def test_training_pairs_put_the_data_at_the_last_step():
    """At t = 0 the real x_{t-1} is the image and the fake one is G's x_0 without noise."""
    method = tiny_ddgan()
    d = method.diffusion
    x0 = torch.rand(4, 1, 24, 24) * 2 - 1
    t = torch.zeros(4, dtype=torch.long)
    x_prev, x_t = d.q_sample_pair(x0, t, torch.randn_like(x0), torch.randn_like(x0))
    assert torch.equal(x_prev, x0)
    G = randomize_(method.G)
    z = torch.randn(4, 8)
    with torch.no_grad():
        fake = method.reverse_step(G, x_t, t, torch.tensor([0, 1, 2, 0]), z, torch.randn_like(x0))
        assert torch.allclose(fake, G(x_t, t, torch.tensor([0, 1, 2, 0]), z))


def test_r1_penalty_is_the_squared_input_gradient_and_trains_the_discriminator():
    w = torch.randn(3, 1, 4, 4)
    x = torch.randn(3, 1, 4, 4, requires_grad=True)
    assert torch.allclose(r1_penalty((w * x).flatten(1).sum(1), x), w.pow(2).flatten(1).sum(1))  # linear: ||w||^2

    D = PairDiscriminator(1, 3, 24, ndf=8)
    x_prev = torch.randn(4, 1, 24, 24, requires_grad=True)
    logits = D(x_prev, torch.randn(4, 1, 24, 24), torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 0]))
    penalty = r1_penalty(logits, x_prev)
    assert penalty.shape == (4,) and (penalty > 0).all()
    penalty.mean().backward()
    for name in ("stem.weight", "blocks.0.conv1.weight", "final.weight", "class_emb.weight"):
        grad = dict(D.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


# ---------------------------------------------------------------------------------------------
# Sampling and checkpoints


def test_sampling_takes_t_generator_calls():
    """Seeded sampling and checkpoints, shared by every GAN, are tested in test_gan.py."""
    method = tiny_ddgan(channels=3)
    assert method.network_evaluations() == 4
    assert method.sampling_settings() == {"sampler": "ddgan", "steps": 4, "weights": "ema"}


def test_x0_weight_adds_the_reconstruction_term_to_the_generator_loss():
    """The same seeded draws with and without the term: the loss grows by exactly x0_weight * MSE(G's x_0, x_0)."""
    images, labels = toy_batch()
    real = images.float() / 127.5 - 1
    plain, hybrid = tiny_ddgan(seed=3), tiny_ddgan(seed=3, x0_weight=5.0)
    randomize_(plain.G)
    hybrid.G.load_state_dict(plain.G.state_dict())
    hybrid.D.load_state_dict(plain.D.state_dict())
    plain.seed_noise(7)
    hybrid.seed_noise(7)
    loss_plain, stats_plain = plain.g_loss(real, labels)
    loss_hybrid, stats_hybrid = hybrid.g_loss(real, labels)
    assert "g_x0_mse" not in stats_plain and stats_hybrid["g_x0_mse"] > 0
    assert float(stats_hybrid["loss_g"]) == pytest.approx(float(stats_plain["loss_g"]))
    assert loss_hybrid.item() == pytest.approx(loss_plain.item() + 5.0 * float(stats_hybrid["g_x0_mse"]), rel=1e-5)
