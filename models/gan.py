"""What every GAN family shares: the adversarial losses (small callables), the optimizer settings, the
gradient averaging across ranks, and ``GANMethod``, the base of the dcgan, fastgan and ddgan methods.

A family subclass builds its generator and discriminator and says how one discriminator loss and one
generator loss are computed on a batch (``d_loss`` / ``g_loss``); the base class owns the update order
(n_critic discriminator steps per generator step, each on its own batch), the two optimizers, the EMA
of the generator, per-sample seeded sampling, checkpoint state, and the statistics the harness watches
for divergence ("loss*" must stay finite; "d_wins" is 1 on a step the discriminator wins completely).

Multi-worker training averages gradients with ``torch.distributed`` directly rather than through DDP:
the R1 penalty needs a double backward, which DDP does not support (NVlabs' denoising-diffusion-gan
does the same), and a GAN step runs the discriminator on real and fake batches separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from condgen_bench.datasets.base import DatasetSpec, generated_to_uint8, uint8_to_float
from condgen_bench.models.accel import Acceleration, Accelerator
from condgen_bench.models.noise import NoiseStream, TrainingNoise
from condgen_bench.models.ema import EMA
from condgen_bench.models.interface import CheckedSampling
from condgen_bench.models.registry import lookup
from condgen_bench.models.schedule import check_schedule, lr_factor


# ---------------------------------------------------------------------------------------------
# Losses: d(real_logits [B], fake_logits [B]) -> [B]; g(fake_logits [B]) -> [B]


@dataclass(frozen=True)
class AdversarialLoss:
    d: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # discriminator loss per sample
    g: Callable[[torch.Tensor], torch.Tensor]  # generator loss per sample


def _nonsaturating_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """-log D(x) - log(1 - D(G(z))) with D = sigmoid(logit) (Goodfellow et al.'s discriminator loss)."""
    return F.softplus(-real) + F.softplus(fake)


def _nonsaturating_g(fake: torch.Tensor) -> torch.Tensor:
    """-log D(G(z)): the non-saturating generator loss."""
    return F.softplus(-fake)


def _hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """max(0, 1 - D(x)) + max(0, 1 + D(G(z))) (Lim & Ye; Miyato et al.)."""
    return F.relu(1.0 - real) + F.relu(1.0 + fake)


def _hinge_g(fake: torch.Tensor) -> torch.Tensor:
    return -fake


LOSSES: dict[str, AdversarialLoss] = {
    "nonsaturating": AdversarialLoss(_nonsaturating_d, _nonsaturating_g),
    "hinge": AdversarialLoss(_hinge_d, _hinge_g),
}


def get_loss(name: str) -> AdversarialLoss:
    return lookup(LOSSES, name, "adversarial loss")


def discriminator_wins(real: torch.Tensor, fake: torch.Tensor, margin: float) -> torch.Tensor:
    """1.0 when every real logit [B] is above ``margin`` and every fake one [B] below -margin (the
    discriminator tells every image apart with confidence sigmoid(margin) and the generator gets almost no
    signal), else 0.0: a 0-dim float tensor on the logits' device (no host sync)."""
    return ((real.detach().min() > margin) & (fake.detach().max() < -margin)).float()


# ---------------------------------------------------------------------------------------------
# Shared settings


@dataclass
class GANConfig:
    """Optimization settings every GAN family shares (a family's config adds its networks)."""

    lr: float = 2e-4  # generator Adam learning rate (what --lr sweeps)
    d_lr: float | None = None  # discriminator Adam learning rate (None: lr)
    betas: tuple[float, float] = (0.5, 0.999)  # Adam betas of both networks (DCGAN's beta1 = 0.5)
    # both learning rates "constant", or "cosine" decay to 0 at the trial's last step (models/schedule.py)
    lr_schedule: str = "constant"
    n_critic: int = 1  # discriminator updates (each on its own batch) per generator update
    loss: str = "nonsaturating"  # "nonsaturating" (DCGAN's) or "hinge"
    z_dim: int = 64  # latent dimensions
    ema_decay: float = 0.999  # EMA of the generator's weights; samples come from the EMA copy
    win_margin: float = 4.6  # logit margin of a complete discriminator win (sigmoid(4.6) = 0.99)

    def __post_init__(self):
        check_schedule(self.lr_schedule)
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; valid: {list(LOSSES)}")
        if self.n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {self.n_critic}")


def upsampling_plan(image_size: int, min_base: int = 3) -> tuple[int, int]:
    """(base, doublings) with base * 2**doublings == image_size and base the smallest size >= min_base
    that gets there: 24 -> (3, 3), 28 -> (7, 2), 32 -> (4, 3), 48 -> (3, 4), 64 -> (4, 4). Generators
    start from a base x base map and double it; discriminators halve back down to it."""
    base, doublings = image_size, 0
    while base % 2 == 0 and base // 2 >= min_base:
        base //= 2
        doublings += 1
    if doublings == 0:
        raise ValueError(f"image size {image_size} cannot be reached by doubling a map of {min_base} px or more")
    return base, doublings


def channel_widths(width: int, levels: int, max_mult: int = 8) -> list[int]:
    """Channels of ``levels`` maps from full size down: width, 2 width, 4 width, ..., capped at
    max_mult * width."""
    return [width * min(2 ** i, max_mult) for i in range(levels)]


def spectral_or_identity(on: bool) -> Callable[[nn.Module], nn.Module]:
    """layer -> layer with spectral norm (torch's parametrization) when ``on``, else the layer as it is."""
    return spectral_norm if on else (lambda layer: layer)


# ---------------------------------------------------------------------------------------------
# Gradient averaging across ranks


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def broadcast_parameters(module: nn.Module) -> None:
    """Make every rank start from rank 0's parameters and buffers (no-op on one process)."""
    if world_size() > 1:
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def average_gradients(module: nn.Module) -> None:
    """All-reduce the mean of ``module``'s gradients over ranks, in one flat buffer (no-op on one process)."""
    world = world_size()
    if world == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


# ---------------------------------------------------------------------------------------------
# The method


class GANMethod(TrainingNoise, CheckedSampling):
    """Trains ``self.G`` and ``self.D`` adversarially behind the method interface (models/__init__.py).

    Subclasses set ``name`` and implement:
        build(spec) -> (G, D)                              the networks (on the CPU; moved here)
        d_loss(real, labels) -> (loss [], stats)           one discriminator loss on a real batch in [-1, 1]
        g_loss(real, labels) -> (loss [], stats)           one generator loss (real: the batch, for shapes/pairs)
        generate(G, noise, labels) -> [B, C, H, W] in [-1, 1]  sampling: ``noise.next()`` is the latent
            [B, z_dim] of each sample; ``noise.next(shape)`` draws further per-sample noise
    and may override ``sampling_settings`` (and so ``network_evaluations``). Training noise comes from
    ``self.generator`` (``self.latents(b)`` for z), so that training is seeded.
    ``stats`` values are 0-dim tensors (detached; no ``.item()``: the harness reads them once per sync
    interval); put "d_wins" (see discriminator_wins) in the discriminator's. Logits are cast to float32
    before a loss is formed (``accel`` may run the networks in bf16 / fp16).
    """

    name = "gan"
    has_likelihood = False
    sampler_axes = ()  # one generator call (DDGAN: its T steps) with the EMA weights: nothing to vary

    def __init__(self, config: GANConfig, spec: DatasetSpec, device: torch.device | str = "cpu",
                 wrap: Callable[[nn.Module], nn.Module] | None = None, seed: int = 0,
                 accel: Acceleration | None = None):
        # ``wrap`` (the harness's DDP wrapper) is not used: gradients are averaged here (module docstring).
        # ``accel``: the networks' precision and memory format; compile applies to the generator only (the
        # R1 penalty's double backward does not go through compiled graphs)
        self.config = config
        self.spec = spec
        self.accel = accel
        self.seed = seed
        self.loss_fn = get_loss(config.loss)
        if config.n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {config.n_critic}")
        torch.manual_seed(seed)  # the same initial weights on every rank, whatever the device
        self.G, self.D = self.build(spec)
        self.d_peak_lr = config.d_lr if config.d_lr is not None else config.lr
        self.step = 0  # discriminator updates (one per batch the harness gives)
        self.total_steps: int | None = None  # set_training_length
        self.g_steps = 0  # generator updates
        self.last_g_loss = float("nan")  # the latest generator loss (reported between generator updates)
        self.to(device)

    def to(self, device: torch.device | str) -> "GANMethod":
        """Put the method on ``device`` before it trains: both networks (and a family's own tensors,
        ``place``) move there, every rank takes rank 0's weights, and the EMA copy, compilation, optimizers,
        loss scalers and training noise (seeded with the method's seed) are made for it. Built on the CPU,
        every method is put on its device this way. Returns self."""
        self.device = torch.device(device)
        self.acc = Accelerator(self.accel, self.device)
        self.G, self.D = self.acc.prepare(self.G.to(self.device)), self.acc.prepare(self.D.to(self.device))
        self.place(self.device)
        broadcast_parameters(self.G)
        broadcast_parameters(self.D)
        self.ema = EMA(self.G, self.config.ema_decay)
        self.train_G = self.acc.maybe_compile(self.G)  # what the losses call (the EMA copy samples)
        self.scaler_g, self.scaler_d = self.acc.scaler(), self.acc.scaler()
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=self.config.lr, betas=tuple(self.config.betas))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=self.d_peak_lr, betas=tuple(self.config.betas))
        self.place_noise(self.device, self.seed)
        return self

    def place(self, device: torch.device) -> None:
        """Move a family's own tensors (DDGAN's diffusion schedule) to ``device``; nothing by default."""

    # what subclasses provide ---------------------------------------------------------------

    def build(self, spec: DatasetSpec) -> tuple[nn.Module, nn.Module]:
        raise NotImplementedError

    def d_loss(self, real: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def g_loss(self, real: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def generate(self, G: nn.Module, noise: NoiseStream, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # training ------------------------------------------------------------------------------

    def set_training_length(self, total_steps: int) -> None:
        """The trial's number of train_step calls (its epoch budget), where the cosine schedule ends."""
        self.total_steps = total_steps

    def latents(self, batch: int) -> torch.Tensor:
        """Training latents z ~ N(0, I): [batch, z_dim], from the seeded training generator."""
        return torch.randn(batch, self.config.z_dim, generator=self.generator, device=self.device)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """One discriminator update on this batch and, every n_critic-th batch, one generator update.
        images: [B, C, H, W] uint8; labels: [B] int64. Returns {"loss" (the generator's latest loss; absent
        before its first update), "loss_d", "d_wins", ...}: 0-dim tensors on the device (no host sync)."""
        real = self.acc.images(uint8_to_float(images.to(self.device)))
        y = labels.to(self.device)
        factor = lr_factor(self.config.lr_schedule, self.step, 0, self.total_steps)
        for opt, peak in ((self.opt_g, self.config.lr), (self.opt_d, self.d_peak_lr)):
            for group in opt.param_groups:
                group["lr"] = peak * factor
        self.G.train()
        self.D.train()
        with self.acc.autocast():
            loss_d, stats = self.d_loss(real, y)
        self.acc.step(loss_d, self.opt_d, self.scaler_d, reduce=lambda: average_gradients(self.D))
        self.step += 1
        stats.setdefault("loss_d", loss_d.detach())  # a family may report its own (DDGAN: see its R1)
        if self.step % self.config.n_critic == 0:
            for p in self.D.parameters():
                p.requires_grad_(False)
            with self.acc.autocast():
                loss_g, g_stats = self.g_loss(real, y)
            self.acc.step(loss_g, self.opt_g, self.scaler_g, reduce=lambda: average_gradients(self.G))
            for p in self.D.parameters():
                p.requires_grad_(True)
            self.ema.update(self.G)
            self.g_steps += 1
            self.last_g_loss = loss_g.detach()
            stats.update(g_stats)
        if self.g_steps:
            stats["loss"] = self.last_g_loss
        return stats

    # sampling ------------------------------------------------------------------------------

    def sampling_settings(self, **overrides) -> dict:
        """The sampler settings an evaluation used: a GAN has none to vary (recorded as the generator
        with EMA weights, one network call)."""
        if overrides:
            raise ValueError(f"{self.name} has no sampler settings to vary; got {sorted(overrides)}")
        return {"sampler": "generator", "steps": 1, "weights": "ema"}

    def network_evaluations(self, **overrides) -> int:
        """Generator calls per image."""
        return int(self.sampling_settings(**overrides)["steps"])

    @torch.no_grad()
    def sample_checked(self, labels: torch.Tensor, seeds: torch.Tensor, batch_size: int = 256,
                       **overrides) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate with the EMA generator. labels, seeds: [N] int64 -> ([N, C, H, W] uint8, [N] bool finite).

        Image i depends only on (labels[i], seeds[i]), not on ``batch_size``: its noise comes from its
        own seeded stream and the networks run in eval mode (batch-norm running statistics)."""
        self.sampling_settings(**overrides)  # rejects settings this family does not have
        images, finite = [], []
        for start in range(0, len(labels), batch_size):
            part = slice(start, start + batch_size)
            noise = NoiseStream(seeds[part], (self.config.z_dim,), self.device)
            batch, ok = generated_to_uint8(self.generate(self.ema.shadow, noise, labels[part].to(self.device)))
            images.append(batch.cpu())
            finite.append(ok.cpu())
        return torch.cat(images), torch.cat(finite)

    # checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to resume; random-number states as CPU tensors."""
        state = {"G": self.G.state_dict(), "D": self.D.state_dict(), "ema": self.ema.state_dict(),
                 "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "step": self.step,
                 "g_steps": self.g_steps, "generator": self.noise_state()}
        for name, scaler in (("scaler_g", self.scaler_g), ("scaler_d", self.scaler_d)):
            if scaler is not None:
                state[name] = scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Resume from ``state_dict()`` output, onto this method's device (a noise state of another device
        type is left out: the harness reseeds the stream, see models/noise.py)."""
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.ema.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step = state["step"]
        self.g_steps = state["g_steps"]
        self.load_noise_state(state["generator"])
        for name, scaler in (("scaler_g", self.scaler_g), ("scaler_d", self.scaler_d)):
            if scaler is not None and name in state:
                scaler.load_state_dict(state[name])
