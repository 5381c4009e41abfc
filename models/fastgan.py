"""The ``fastgan`` method: a class-conditional FastGAN (Liu et al. 2021) for small images, trained with
DiffAugment (Zhao et al. 2020, models/diffaugment.py) behind the GAN base class (models/gan.py).

Generator: [z, embed(y)] -> a base x base map (a transposed convolution over the 1x1 input, batch norm,
GLU), then one up-block per doubling (nearest upsample, 3x3 conv, batch norm, GLU), then a 3x3 conv and
tanh. Skip-layer excitation (SLE) gates every map with one from two doublings lower: the low map is
pooled to 4x4, a 4x4 conv makes it 1x1, LeakyReLU 0.2, a 1x1 conv, sigmoid, and the result scales the
high map's channels. 32 px (base 4): maps 4, 8, 16, 32 with SLE 4 -> 16 and 8 -> 32.
Discriminator: one down-block per halving (4x4 stride-2 conv, batch norm (none on the first), LeakyReLU
0.2) down to the base map; the logit is a projection (Miyato & Koyama 2018) on the summed base map:
logit = linear(h) + <embed(y), h>. Two self-supervised decoders (up-blocks, then a 3x3 conv and tanh)
reconstruct, from the discriminator's features of real images only, the whole (augmented) image at
min(4 x base, size) px from the base map, and a random quarter of it at min(4 x base, size / 2) px from the
matching quarter of the 2 x base map (one quarter per sample).

What changed from the 256+ px original, for 24..64 px images:
  - the generator starts at the upsampling plan's base (3, 4 or 7 px) rather than 4 px, and SLE skips two
    doublings rather than four (4 -> 64 in the original cannot fit in a 32 px generator);
  - one up-block type: the official code's second conv and per-pixel noise injection in some blocks
    are left out, as is the discriminator's second (downscaled) input branch and its SLE;
  - plain down-blocks instead of the official two-path ones; a projection logit instead of the
    spatial logit map, for class conditioning (the original is unconditional);
  - reconstruction is an L1 loss: the paper's LPIPS needs downloaded VGG/AlexNet weights, which this
    benchmark cannot fetch. Targets are the augmented real images the discriminator saw, average-pooled
    to the decoders' size;
  - widths follow the image size (see FastGANConfig) rather than the original's fixed table.
As in the official code, every conv and linear layer of both networks is spectrally normalised.
Sizes: any that models.gan.upsampling_plan accepts; with a single doubling (e.g. 26 px) there is no
2 x base map below the image, so neither SLE nor the quarter decoder exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from condgen_bench.datasets.base import DatasetSpec
from condgen_bench.models.diffaugment import diff_augment, parse_policy
from condgen_bench.models.noise import NoiseStream
from condgen_bench.models.gan import (GANConfig, GANMethod, channel_widths, discriminator_wins, spectral_or_identity,
                        upsampling_plan)

Wrap = Callable[[nn.Module], nn.Module]  # spectral norm on a layer, or the identity


@dataclass
class FastGANConfig(GANConfig):
    """FastGAN's networks and losses; lr 2e-4 and betas (0.5, 0.999) from GANConfig are FastGAN's own."""

    loss: str = "hinge"  # adversarial loss: FastGAN's hinge (the base default is DCGAN's non-saturating)
    ngf: int = 32  # generator channels at full resolution (doubled at each halving, up to 8 * ngf)
    ndf: int = 64  # D channels after its first down-block (doubled per halving, up to 8 * ndf); decoders' width
    embed_dim: int = 32  # size of the generator's class embedding, concatenated to z
    policy: str = "color,translation"  # DiffAugment ops on everything D sees (FastGAN's choice; "" for none)
    recon_weight: float = 1.0  # weight of the discriminator's L1 reconstruction loss on real images
    spectral_norm: bool = True  # spectral norm on every conv/linear layer of G and D, as the official code
    # batch norm in the discriminator's down-blocks after the first (FastGAN's choice); off leaves spectral
    # norm alone, as in Miyato & Koyama's projection discriminator
    d_batch_norm: bool = True

    def __post_init__(self):
        super().__post_init__()
        parse_policy(self.policy)  # names the unknown ops


class UpBlock(nn.Sequential):
    """[B, cin, s, s] -> [B, cout, 2s, 2s]: nearest upsample, 3x3 conv to 2 cout, batch norm, GLU."""

    def __init__(self, cin: int, cout: int, sn: Wrap):
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"),
                         sn(nn.Conv2d(cin, 2 * cout, 3, padding=1, bias=False)),
                         nn.BatchNorm2d(2 * cout), nn.GLU(dim=1))


class DownBlock(nn.Sequential):
    """[B, cin, s, s] -> [B, cout, s/2, s/2]: 4x4 stride-2 conv, batch norm (optional), LeakyReLU 0.2."""

    def __init__(self, cin: int, cout: int, sn: Wrap, batch_norm: bool = True):
        layers = [sn(nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=not batch_norm))]
        if batch_norm:
            layers.append(nn.BatchNorm2d(cout))
        super().__init__(*layers, nn.LeakyReLU(0.2))


class SkipExcitation(nn.Module):
    """SLE: (low [B, c_low, *, *], high [B, c_high, S, S]) -> high scaled per channel by a gate in (0, 1)
    computed from ``low``."""

    def __init__(self, c_low: int, c_high: int, sn: Wrap):
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(4), sn(nn.Conv2d(c_low, c_high, 4)), nn.LeakyReLU(0.2),
                                  sn(nn.Conv2d(c_high, c_high, 1)), nn.Sigmoid())

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return high * self.gate(low)


class Decoder(nn.Sequential):
    """[B, cin, s, s] -> [B, channels, s 2**ups, s 2**ups] in [-1, 1]: ``ups`` (>= 1) up-blocks of
    ``width`` channels, a 3x3 conv and tanh."""

    def __init__(self, cin: int, width: int, channels: int, ups: int, sn: Wrap):
        blocks = [UpBlock(cin if i == 0 else width, width, sn) for i in range(ups)]
        super().__init__(*blocks, sn(nn.Conv2d(width, channels, 3, padding=1)), nn.Tanh())


def quarter(x: torch.Tensor, quadrants: torch.Tensor) -> torch.Tensor:
    """Sample i's quadrant ``quadrants[i]`` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right):
    x [B, C, H, W], quadrants [B] int64 -> [B, C, H/2, W/2]."""
    h, w = x.shape[2] // 2, x.shape[3] // 2
    parts = torch.stack([x[:, :, :h, :w], x[:, :, :h, w:2 * w], x[:, :, h:2 * h, :w], x[:, :, h:2 * h, w:2 * w]], 1)
    return parts[torch.arange(len(x), device=x.device), quadrants]


class FastGANGenerator(nn.Module):
    """(z [B, z_dim], y [B]) -> images [B, channels, size, size] in [-1, 1]."""

    def __init__(self, z_dim: int, num_classes: int, channels: int, image_size: int, ngf: int, embed_dim: int,
                 sn: Wrap = spectral_or_identity(False)):
        super().__init__()
        base, doublings = upsampling_plan(image_size)
        widths = channel_widths(ngf, doublings + 1)[::-1]  # level 0 (the base map) first; ngf at full size
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.init = nn.Sequential(sn(nn.ConvTranspose2d(z_dim + embed_dim, 2 * widths[0], base, bias=False)),
                                  nn.BatchNorm2d(2 * widths[0]), nn.GLU(dim=1))
        self.ups = nn.ModuleList(UpBlock(cin, cout, sn) for cin, cout in zip(widths, widths[1:]))
        # sle[k] gates level k + 2 with level k
        self.sle = nn.ModuleList(SkipExcitation(widths[k], widths[k + 2], sn) for k in range(doublings - 1))
        self.to_image = nn.Sequential(sn(nn.Conv2d(widths[-1], channels, 3, padding=1)), nn.Tanh())

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.init(torch.cat([z, self.embed(y)], dim=1)[:, :, None, None])
        levels = [h]
        for level, up in enumerate(self.ups, start=1):
            h = up(h)
            if level >= 2:
                h = self.sle[level - 2](levels[level - 2], h)
            levels.append(h)
        return self.to_image(h)


class FastGANDiscriminator(nn.Module):
    """Conditional logits of images and, for the reconstruction loss, decodings of its own features.

    ``forward(x [B, channels, size, size], y [B]) -> [B]``; the pieces: ``features`` (the map after each
    down-block), ``logits`` (the projection head on the last), ``decode`` (the two reconstructions)."""

    def __init__(self, num_classes: int, channels: int, image_size: int, ndf: int,
                 sn: Wrap = spectral_or_identity(False), batch_norm: bool = True):
        super().__init__()
        base, doublings = upsampling_plan(image_size)
        widths = channel_widths(ndf, doublings)  # after each down-block: size/2, size/4, ..., base
        self.down = nn.ModuleList(DownBlock(cin, cout, sn, batch_norm=batch_norm and i > 0)
                                  for i, (cin, cout) in enumerate(zip([channels] + widths, widths)))
        self.linear = sn(nn.Linear(widths[-1], 1))
        self.embed = sn(nn.Embedding(num_classes, widths[-1]))
        # decoders grow a base x base map to (at most) 4 x base, never past the target's own size
        self.whole = Decoder(widths[-1], ndf, channels, min(2, doublings), sn)
        self.part = Decoder(widths[-2], ndf, channels, min(2, doublings - 1), sn) if doublings >= 2 else None

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x [B, channels, size, size] -> the maps after each down-block, [B, widths[i], size / 2**(i+1), ...];
        the last is the base x base map."""
        maps = []
        for block in self.down:
            x = block(x)
            maps.append(x)
        return maps

    def logits(self, base_map: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Projection head: base_map [B, F, base, base], y [B] -> [B]."""
        h = base_map.sum(dim=(2, 3))
        return self.linear(h).flatten() + (self.embed(y) * h).sum(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.logits(self.features(x)[-1], y)

    def decode(self, maps: list[torch.Tensor], quadrants: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """maps (from ``features``), quadrants [B] int64 in 0..3 -> (the whole image [B, channels, t, t] with
        t = min(4 base, size), quadrant q of the image [B, channels, t', t'] with t' = min(4 base, size / 2),
        or None when there is no 2 x base map)."""
        whole = self.whole(maps[-1])
        part = self.part(quarter(maps[-2], quadrants)) if self.part is not None else None
        return whole, part


def reconstruction_loss(D: FastGANDiscriminator, maps: list[torch.Tensor], images: torch.Tensor,
                        quadrants: torch.Tensor) -> torch.Tensor:
    """L1 between D's decodings and the images its features came from, average-pooled to the decodings'
    sizes: maps (D.features(images)), images [B, C, size, size], quadrants [B] -> [B] (mean absolute
    error of the whole image plus that of the quarter)."""
    whole, part = D.decode(maps, quadrants)
    whole, part = whole.float(), (part.float() if part is not None else None)  # autocast: the loss in float32
    loss = (whole - F.adaptive_avg_pool2d(images, whole.shape[-2:])).abs().mean(dim=(1, 2, 3))
    if part is not None:
        target = F.adaptive_avg_pool2d(quarter(images, quadrants), part.shape[-2:])
        loss = loss + (part - target).abs().mean(dim=(1, 2, 3))
    return loss


def tiny_config() -> FastGANConfig:
    """FastGAN with 4-channel networks, an 8-d latent and every DiffAugment operation, so that a check of the
    tiny config goes through all of them (tests, checks)."""
    return FastGANConfig(ngf=4, ndf=4, z_dim=8, embed_dim=4, policy="color,translation,cutout")


class FastGANMethod(GANMethod):
    """Conditional FastGAN with DiffAugment; see the module docstring and models/gan.py for the training loop."""

    name = "fastgan"

    def build(self, spec: DatasetSpec) -> tuple[nn.Module, nn.Module]:
        c = self.config
        parse_policy(c.policy)  # an unknown op fails here, not at the first step
        sn = spectral_or_identity(c.spectral_norm)
        G = FastGANGenerator(c.z_dim, spec.num_classes, spec.channels, spec.image_size, c.ngf, c.embed_dim, sn)
        D = FastGANDiscriminator(spec.num_classes, spec.channels, spec.image_size, c.ndf, sn, c.d_batch_norm)
        return G, D

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, C, H, W]: DiffAugment with the configured policy, seeded by the training noise."""
        return diff_augment(images, policy=self.config.policy, generator=self.generator)[0]

    def d_loss(self, real: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Hinge loss on augmented reals and fresh augmented fakes of the same labels [B], plus the
        reconstruction loss on the reals: real [B, C, H, W] in [-1, 1] -> (loss [], stats)."""
        with torch.no_grad():
            fake = self.train_G(self.latents(len(real)), labels)
        real, fake = self.augment(real), self.augment(fake)
        maps = self.D.features(real)
        real_logits, fake_logits = self.D.logits(maps[-1], labels).float(), self.D(fake, labels).float()
        quadrants = torch.randint(4, (len(real),), generator=self.generator, device=self.device)
        recon = reconstruction_loss(self.D, maps, real, quadrants).mean()
        loss = self.loss_fn.d(real_logits, fake_logits).mean() + self.config.recon_weight * recon
        return loss, {"d_real": real_logits.mean().detach(), "d_fake": fake_logits.mean().detach(),
                      "loss_recon": recon.detach(),
                      "d_wins": discriminator_wins(real_logits, fake_logits, self.config.win_margin)}

    def g_loss(self, real: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The generator's loss on fresh augmented fakes of the batch's labels [B] -> (loss [], stats)."""
        fake = self.augment(self.train_G(self.latents(len(real)), labels))
        loss = self.loss_fn.g(self.D(fake, labels).float()).mean()
        return loss, {"loss_g": loss.detach()}

    def generate(self, G: nn.Module, noise: NoiseStream, labels: torch.Tensor) -> torch.Tensor:
        """labels [B] -> images [B, C, H, W] in [-1, 1] from each sample's seeded latent [B, z_dim]."""
        return G(noise.next(), labels)
