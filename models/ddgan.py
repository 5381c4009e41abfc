"""The ``ddgan`` method: a class-conditional denoising diffusion GAN (Xiao, Kreis & Vahdat 2022) behind the
GAN base class (models/gan.py).

A diffusion of only T steps (2..8, the "vp" schedule of models/diffusion.py) has denoising distributions
q(x_{t-1} | x_t) far from Gaussian, so each is modelled by a conditional GAN instead of a Gaussian:
    generator      x_0' = G(x_t, t, y, z), z ~ N(0, I), then x_{t-1} ~ q(x_{t-1} | x_t, x_0') (the posterior);
    discriminator  D(x_{t-1}, x_t, t, y) tells real pairs (x_{t-1}, x_t) ~ q(x_{t-1}, x_t | x_0) from fake
                   ones (G's x_{t-1}, the same x_t).
Sampling starts from x_T ~ N(0, I) and takes the T reverse steps, each a generator call.

Indices follow models/diffusion.py: t = 0..T-1, x_t the noisier member of the pair and x_{t-1} the
cleaner one, x_{-1} the data itself (at t = 0 the real "x_{t-1}" is the image and the fake is G's x_0'
without posterior noise). Xiao et al.'s code writes the same pair as (x_t, x_{t+1}).

Generator: the class-conditional UNet of models/unet.py with a latent input (latent_dim = z_dim) and a
tanh on its output, so the predicted x_0 lies in (-1, 1) as in NVlabs' NCSN++ generator.
Discriminator: the pair concatenated on channels [B, 2C, H, W]; a 3x3 conv, then residual blocks that
halve the size down to the base map of models.gan.upsampling_plan (24 -> 3, 32 -> 4, 48 -> 3 px), each
adding a projection of the timestep embedding to its features; LeakyReLU 0.2 throughout; the features
are summed over pixels and the logit is linear(h) + <embed(y), h> (projection, Miyato & Koyama 2018).
Regularised by lazy R1 on the real x_{t-1} (Mescheder et al. 2018), as in the paper.
Optionally (``x0_weight`` > 0, not in the paper) the generator's loss also regresses its x_0' on the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from condgen_bench.datasets.base import DatasetSpec
from condgen_bench.models.accel import Acceleration
from condgen_bench.models.diffusion import DiffusionConfig, GaussianDiffusion
from condgen_bench.models.noise import NoiseStream
from condgen_bench.models.gan import (GANConfig, GANMethod, channel_widths, discriminator_wins, spectral_or_identity,
                        upsampling_plan)
from condgen_bench.models.unet import UNet, UNetConfig, timestep_embedding, tiny_unet_config

D_MAX_MULT = 4  # the discriminator's widths double at each halving up to D_MAX_MULT * ndf


def _small_unet() -> UNetConfig:
    """The generator's default: about 1.2M parameters (with z_dim 64), for 24-32 px on a CPU."""
    return UNetConfig(base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attention_resolutions=(),
                      num_heads=4)


@dataclass
class DDGANConfig(GANConfig):
    """Optimization defaults are Xiao et al.'s CIFAR-10 settings; the networks are sized for a CPU."""

    lr: float = 1.6e-4  # generator Adam learning rate (Xiao et al.'s CIFAR-10 value)
    d_lr: float | None = 1.25e-4  # discriminator Adam learning rate (theirs; None: lr)
    betas: tuple[float, float] = (0.5, 0.9)  # Adam betas of both networks (theirs)
    z_dim: int = 64  # latent dimensions of each reverse step's generator call (the paper: 100)
    # loss: inherited, "nonsaturating" (the paper's softplus losses) or "hinge"
    unet: UNetConfig = field(default_factory=_small_unet)  # the generator's UNet (its latent_dim is z_dim)
    timesteps: int = 4  # T, diffusion steps and generator calls per sample (the paper: 2..8, 4 on CIFAR-10)
    ndf: int = 32  # discriminator channels at full resolution (doubled at each halving, up to D_MAX_MULT * ndf)
    # R1 weight gamma: the penalty is gamma / 2 * E||grad_{x_{t-1}} D||^2 on real pairs (0: off); 0.02 is
    # the paper's CIFAR-10 value
    r1_gamma: float = 0.02
    # lazy R1: computed on every r1_every-th discriminator step and multiplied by r1_every, so its average
    # weight is r1_gamma whatever the interval (Karras et al. 2020; NVlabs' code, lazy_reg 15 on CIFAR-10,
    # does not multiply)
    r1_every: int = 15
    # spectral norm on every conv / linear / embedding layer of the discriminator (NVlabs' has none; the
    # projection discriminators of dcgan and fastgan do)
    d_spectral_norm: bool = False
    # weight of an auxiliary x0 reconstruction term, x0_weight * mean (G(x_t, t, y, z) - x_0)^2, added to the
    # generator's adversarial loss (0: the paper's purely adversarial generator). Not in Xiao et al.: on a
    # CPU budget of ~1-2k steps the adversarial signal alone leaves samples at chance accuracy (docs/families.md)
    x0_weight: float = 0.0


# ---------------------------------------------------------------------------------------------
# Networks


class DDGANGenerator(nn.Module):
    """The denoiser: predicts the clean image from a noisy one, a timestep, a label and a latent.

    (x_t [B, C, H, W], t [B] in 0..T-1, y [B] labels, z [B, z_dim]) -> x_0' [B, C, H, W] in (-1, 1)."""

    def __init__(self, channels: int, num_classes: int, image_size: int, z_dim: int, config: UNetConfig):
        super().__init__()
        self.unet = UNet(channels, channels, num_classes, image_size, config, latent_dim=z_dim)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x_t: [B, C, H, W], t: [B], y: [B], z: [B, z_dim] -> x_0' [B, C, H, W] in (-1, 1)."""
        return torch.tanh(self.unet(x_t, t, y, z))


class DownBlock(nn.Module):
    """Residual block that halves the size: LeakyReLU-conv3x3, plus a projection of the timestep embedding,
    LeakyReLU-conv3x3, 2x average pooling; the skip path pools and maps channels by a 1x1 conv; the sum
    is scaled by 1/sqrt(2). x: [B, in_ch, H, W], emb: [B, emb_dim] -> [B, out_ch, H/2, W/2]."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, sn: Callable[[nn.Module], nn.Module]):
        super().__init__()
        self.conv1 = sn(nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.emb = sn(nn.Linear(emb_dim, out_ch))
        self.conv2 = sn(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = sn(nn.Conv2d(in_ch, out_ch, 1, bias=False))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x: [B, in_ch, H, W], emb: [B, emb_dim] -> [B, out_ch, H/2, W/2]."""
        h = self.conv1(F.leaky_relu(x, 0.2)) + self.emb(emb)[:, :, None, None]
        h = F.avg_pool2d(self.conv2(F.leaky_relu(h, 0.2)), 2)
        return (h + self.skip(F.avg_pool2d(x, 2))) / math.sqrt(2)


class PairDiscriminator(nn.Module):
    """Time- and class-conditional discriminator of denoising pairs (see the module docstring).

    (x_prev [B, C, H, W], x_t [B, C, H, W], t [B] in 0..T-1, y [B] labels in 0..num_classes-1) -> logits [B].
    Sizes: any that models.gan.upsampling_plan accepts (24, 28, 32, 48, 64 px, ...); any channel count."""

    def __init__(self, channels: int, num_classes: int, image_size: int, ndf: int, spectral: bool = False):
        super().__init__()
        sn = spectral_or_identity(spectral)
        _, halvings = upsampling_plan(image_size)
        widths = channel_widths(ndf, halvings + 1, D_MAX_MULT)
        emb_dim = 4 * ndf
        self.ndf = ndf
        self.time_mlp = nn.Sequential(sn(nn.Linear(ndf, emb_dim)), nn.LeakyReLU(0.2), sn(nn.Linear(emb_dim, emb_dim)))
        self.stem = sn(nn.Conv2d(2 * channels, widths[0], 3, padding=1))
        self.blocks = nn.ModuleList(DownBlock(cin, cout, emb_dim, sn) for cin, cout in zip(widths, widths[1:]))
        self.final = sn(nn.Conv2d(widths[-1], widths[-1], 3, padding=1))  # on the base x base map
        self.linear = sn(nn.Linear(widths[-1], 1))
        class_emb = nn.Embedding(num_classes, widths[-1])
        bound = 1 / math.sqrt(widths[-1])  # the projection term starts on the scale of the linear one
        nn.init.uniform_(class_emb.weight, -bound, bound)
        self.class_emb = sn(class_emb)

    def forward(self, x_prev: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x_prev, x_t: [B, C, H, W]; t, y: [B] -> logits [B]."""
        emb = F.leaky_relu(self.time_mlp(timestep_embedding(t, self.ndf)), 0.2)
        h = self.stem(torch.cat([x_prev, x_t], dim=1))
        for block in self.blocks:
            h = block(h, emb)
        h = F.leaky_relu(self.final(F.leaky_relu(h, 0.2)), 0.2).sum(dim=(2, 3))  # [B, features]
        return self.linear(h).flatten() + (self.class_emb(y) * h).sum(1)


# ---------------------------------------------------------------------------------------------
# The R1 penalty


def r1_penalty(logits: torch.Tensor, inputs: torch.Tensor, scale: torch.Tensor | float = 1.0) -> torch.Tensor:
    """||d logit_i / d inputs_i||^2 per sample, with the graph kept (create_graph) so that the penalty
    trains the discriminator. logits: [B], computed from inputs [B, ...] (requires_grad) -> [B] float32.

    ``scale``: the loss scaler's scale under fp16 (models/accel.py Accelerator.loss_scale): the gradient is
    taken of the logits' mean times the scale, as the scaler scales a mean loss, so that small gradients
    survive the float16 backward instead of flushing to zero, and taken back to the logits' own scale in
    float32 (an overflow gives inf, and the scaler skips the step)."""
    (grad,) = torch.autograd.grad(logits.mean() * scale, inputs, create_graph=True)
    return (grad.float() * (len(logits) / scale)).pow(2).flatten(1).sum(1)


# ---------------------------------------------------------------------------------------------
# The method


def tiny_config() -> DDGANConfig:
    """DDGAN with 2 steps, a tiny UNet generator (no attention), an 8-channel D and R1 every 2 steps, so that a
    check of a few steps meets the penalty (tests, checks)."""
    return DDGANConfig(ndf=8, z_dim=8, timesteps=2, r1_every=2, unet=tiny_unet_config(attention_resolutions=()))


class DDGANMethod(GANMethod):
    """Denoising diffusion GAN; see the module docstring and models/gan.py for the training loop."""

    name = "ddgan"

    def __init__(self, config: DDGANConfig, spec: DatasetSpec, device: torch.device | str = "cpu",
                 wrap: Callable[[nn.Module], nn.Module] | None = None, seed: int = 0,
                 accel: Acceleration | None = None):
        if config.timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {config.timesteps}")
        if config.r1_every < 1:
            raise ValueError(f"r1_every must be >= 1, got {config.r1_every}")
        # the process: q_sample, the training pairs and the posterior (the generator predicts x_0)
        self.diffusion = GaussianDiffusion(DiffusionConfig(timesteps=config.timesteps, schedule="vp",
                                                           prediction="x0"))
        super().__init__(config, spec, device=device, wrap=wrap, seed=seed, accel=accel)

    def place(self, device: torch.device) -> None:
        """The diffusion's schedule arrays to ``device``, once."""
        self.diffusion.to(device)

    def build(self, spec: DatasetSpec) -> tuple[nn.Module, nn.Module]:
        c = self.config
        G = DDGANGenerator(spec.channels, spec.num_classes, spec.image_size, c.z_dim, c.unet)
        D = PairDiscriminator(spec.channels, spec.num_classes, spec.image_size, c.ndf, c.d_spectral_norm)
        return G, D

    # one reverse step, shared by training and sampling ------------------------------------

    def reverse_step(self, G: nn.Module, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor, z: torch.Tensor,
                     noise: torch.Tensor) -> torch.Tensor:
        """x_{t-1} ~ q(x_{t-1} | x_t, G(x_t, t, y, z)), with the given standard normal noise (unused at t = 0).
        x_t, noise: [B, C, H, W]; t, y: [B]; z: [B, z_dim] -> [B, C, H, W]."""
        return self.diffusion.q_posterior_sample(G(x_t, t, y, z), x_t, t, noise)

    # training ------------------------------------------------------------------------------

    def _randn(self, shape: torch.Size) -> torch.Tensor:
        """Standard normal training noise of ``shape`` from the seeded training generator."""
        return torch.randn(shape, generator=self.generator, device=self.device)

    def _timesteps(self, batch: int) -> torch.Tensor:
        """t uniform over 0..T-1: [batch] int64, from the seeded training generator."""
        return torch.randint(self.diffusion.num_timesteps, (batch,), generator=self.generator, device=self.device)

    def d_loss(self, real: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The discriminator's loss on real pairs from ``real`` [B, C, H, W] in [-1, 1] and fake pairs with
        the same x_t and labels [B], plus the lazy R1 penalty on every r1_every-th step."""
        b = len(real)
        t = self._timesteps(b)
        x_prev, x_t = self.diffusion.q_sample_pair(real, t, self._randn(real.shape), self._randn(real.shape))
        with torch.no_grad():
            fake_prev = self.reverse_step(self.train_G, x_t, t, labels, self.latents(b), self._randn(real.shape))
        with_r1 = self.config.r1_gamma > 0 and self.step % self.config.r1_every == 0
        x_prev.requires_grad_(with_r1)
        real_logits = self.D(x_prev, x_t, t, labels).float()
        fake_logits = self.D(fake_prev, x_t, t, labels).float()
        loss = self.loss_fn.d(real_logits, fake_logits).mean()
        stats = {"d_real": real_logits.mean().detach(), "d_fake": fake_logits.mean().detach(),
                 "d_wins": discriminator_wins(real_logits, fake_logits, self.config.win_margin)}
        if with_r1:
            penalty = r1_penalty(real_logits, x_prev, self.acc.loss_scale(self.scaler_d)).mean()
            weighted = 0.5 * self.config.r1_gamma * self.config.r1_every * penalty
            # the reported loss leaves out a penalty whose scaled fp16 gradient overflowed: the loss scaler
            # skips that step and lowers its scale (PyTorch's AMP recipe for gradient penalties), no divergence
            stats["loss_d"] = (loss + torch.where(torch.isfinite(weighted), weighted, 0.0)).detach()
            loss = loss + weighted
            stats["r1"] = penalty.detach()  # E||grad||^2, before weighting (inf on such a step)
        return loss, stats

    def g_loss(self, real: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The generator's loss on fresh fake pairs: x_t ~ q(x_t | x_0) from ``real`` [B, C, H, W], fresh t,
        z and posterior noise; labels [B]."""
        b = len(real)
        t = self._timesteps(b)
        x_t = self.diffusion.q_sample(real, t, self._randn(real.shape))
        x0 = self.train_G(x_t, t, labels, self.latents(b))
        fake_prev = self.diffusion.q_posterior_sample(x0, x_t, t, self._randn(real.shape))
        adversarial = self.loss_fn.g(self.D(fake_prev, x_t, t, labels).float()).mean()
        stats = {"loss_g": adversarial.detach()}
        if self.config.x0_weight <= 0:
            return adversarial, stats
        reconstruction = (x0.float() - real).pow(2).mean()
        stats["g_x0_mse"] = reconstruction.detach()
        return adversarial + self.config.x0_weight * reconstruction, stats

    # sampling ------------------------------------------------------------------------------

    def generate(self, G: nn.Module, noise: NoiseStream, labels: torch.Tensor) -> torch.Tensor:
        """labels [B] -> images [B, C, H, W] in [-1, 1]: x_T from the stream, then T reverse steps, each
        drawing its z [B, z_dim] and its posterior noise [B, C, H, W] from the per-sample stream."""
        shape = (self.spec.channels, self.spec.image_size, self.spec.image_size)
        x = noise.next(shape)
        for i in reversed(range(self.diffusion.num_timesteps)):
            t = torch.full((len(labels),), i, dtype=torch.long, device=x.device)
            z = noise.next((self.config.z_dim,))
            x = self.reverse_step(G, x, t, labels, z, noise.next(shape))
        return x

    def sampling_settings(self, **overrides) -> dict:
        """The T-step reverse process with EMA weights (nothing to vary): T generator calls per image."""
        settings = super().sampling_settings(**overrides)  # rejects overrides
        settings.update(sampler="ddgan", steps=self.diffusion.num_timesteps)
        return settings
