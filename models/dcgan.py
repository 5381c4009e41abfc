"""The ``dcgan`` method: a class-conditional DCGAN (Radford et al. 2015) behind the GAN base class.

Generator: [z, embed(y)] -> a base x base map (a linear layer, which is DCGAN's 1x1 -> 4x4 transposed
convolution), then stride-2 transposed convolutions with batch norm and ReLU, tanh at the output.
Discriminator, two conditionings:
  "concat": the label as one-hot maps concatenated to the image, stride-2 convolutions with batch norm
            (none on the first) and LeakyReLU 0.2, a final convolution over the base x base map;
  "projection": spectral norm on every layer, no batch norm, and logit = psi(h) + <embed(y), h> on the
            summed features h (Miyato & Koyama 2018).
Sizes: any that models.gan.upsampling_plan accepts (24, 28, 32, 48, 64 px, ...); 1 or 3 channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from condgen_bench.datasets.base import DatasetSpec
from condgen_bench.models.noise import NoiseStream
from condgen_bench.models.gan import (GANConfig, GANMethod, channel_widths, discriminator_wins, spectral_or_identity,
                        upsampling_plan)

DISCRIMINATORS = ("concat", "projection")


@dataclass
class DCGANConfig(GANConfig):
    ngf: int = 64  # generator channels at full resolution (doubled at each halving, up to 8 * ngf)
    ndf: int = 64  # discriminator channels after its first convolution (doubled at each halving, up to 8 * ndf)
    embed_dim: int = 32  # size of the generator's class embedding, concatenated to z
    discriminator: str = "projection"  # "concat" (label maps + batch norm) or "projection" (spectral norm)

    def __post_init__(self):
        super().__post_init__()
        if self.discriminator not in DISCRIMINATORS:
            raise ValueError(f"unknown discriminator {self.discriminator!r}; valid: {list(DISCRIMINATORS)}")


class DCGANGenerator(nn.Module):
    """(z [B, z_dim], y [B]) -> images [B, channels, size, size] in [-1, 1]."""

    def __init__(self, z_dim: int, num_classes: int, channels: int, image_size: int, ngf: int, embed_dim: int):
        super().__init__()
        self.base, doublings = upsampling_plan(image_size)
        widths = channel_widths(ngf, doublings)[::-1]  # the base map's first; ngf at half the output size
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.project = nn.Linear(z_dim + embed_dim, widths[0] * self.base * self.base, bias=False)
        self.project_norm = nn.BatchNorm2d(widths[0])
        layers = []
        for i, (cin, cout) in enumerate(zip(widths, widths[1:] + [channels])):
            last = i == doublings - 1
            layers.append(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=last))
            if not last:
                layers += [nn.BatchNorm2d(cout), nn.ReLU()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.project(torch.cat([z, self.embed(y)], dim=1))
        h = F.relu(self.project_norm(h.view(len(z), -1, self.base, self.base)))
        return torch.tanh(self.body(h))


class DCGANDiscriminator(nn.Module):
    """(images [B, channels, size, size] in [-1, 1], y [B]) -> logits [B]."""

    def __init__(self, num_classes: int, channels: int, image_size: int, ndf: int, conditioning: str):
        super().__init__()
        if conditioning not in DISCRIMINATORS:
            raise ValueError(f"unknown discriminator {conditioning!r}; valid: {list(DISCRIMINATORS)}")
        self.conditioning = conditioning
        self.num_classes = num_classes
        base, doublings = upsampling_plan(image_size)
        widths = channel_widths(ndf, doublings)
        projection = conditioning == "projection"
        norm = spectral_or_identity(projection)
        cin = channels + (0 if projection else num_classes)
        layers = []
        for i, cout in enumerate(widths):
            layers.append(norm(nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=projection or i == 0)))
            if i > 0 and not projection:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2))
            cin = cout
        self.body = nn.Sequential(*layers)
        if projection:
            self.linear = norm(nn.Linear(cin, 1))
            self.embed = norm(nn.Embedding(num_classes, cin))
        else:
            self.head = nn.Conv2d(cin, 1, base)  # one logit from the whole base x base map

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.conditioning == "concat":
            maps = F.one_hot(y, self.num_classes).to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])
            return self.head(self.body(torch.cat([x, maps], dim=1))).flatten()
        h = self.body(x).sum(dim=(2, 3))  # [B, features]
        return self.linear(h).flatten() + (self.embed(y) * h).sum(1)


def tiny_config() -> DCGANConfig:
    """DCGAN with 4-channel networks and an 8-d latent (tests, checks)."""
    return DCGANConfig(ngf=4, ndf=4, z_dim=8, embed_dim=4)


class DCGANMethod(GANMethod):
    """Conditional DCGAN; see the module docstring and models/gan.py for the training loop."""

    name = "dcgan"

    def build(self, spec: DatasetSpec) -> tuple[nn.Module, nn.Module]:
        c = self.config
        G = DCGANGenerator(c.z_dim, spec.num_classes, spec.channels, spec.image_size, c.ngf, c.embed_dim)
        D = DCGANDiscriminator(spec.num_classes, spec.channels, spec.image_size, c.ndf, c.discriminator)
        for module in (*G.modules(), *D.modules()):  # DCGAN's initialisation: N(0, 0.02) weights
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and not hasattr(module, "parametrizations"):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)
        return G, D

    def d_loss(self, real: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The discriminator's loss on a real batch [B, C, H, W] in [-1, 1] and as many fakes of the same labels."""
        with torch.no_grad():
            fake = self.train_G(self.latents(len(real)), labels)
        real_logits, fake_logits = self.D(real, labels).float(), self.D(fake, labels).float()
        loss = self.loss_fn.d(real_logits, fake_logits).mean()
        return loss, {"d_real": real_logits.mean().detach(), "d_fake": fake_logits.mean().detach(),
                      "d_wins": discriminator_wins(real_logits, fake_logits, self.config.win_margin)}

    def g_loss(self, real: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The generator's loss on fresh fakes of the batch's labels [B]."""
        fake = self.train_G(self.latents(len(real)), labels)
        return self.loss_fn.g(self.D(fake, labels).float()).mean(), {}

    def generate(self, G: nn.Module, noise: NoiseStream, labels: torch.Tensor) -> torch.Tensor:
        """labels [B] -> images [B, C, H, W] in [-1, 1] from each sample's seeded latent."""
        return G(noise.next(), labels)
