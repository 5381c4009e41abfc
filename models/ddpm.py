"""The ``ddpm`` method: a class-conditional UNet trained as a Gaussian diffusion (epsilon, x0 or v
prediction; fixed or learned variances), with EMA weights for sampling and classifier-free guidance. It joins the harness through the method
interface in models/__init__.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from condgen_bench.datasets.base import DatasetSpec, float_to_uint8, uint8_to_float
from condgen_bench.models.accel import Acceleration, Accelerator
from condgen_bench.models.diffusion import DiffusionConfig, GaussianDiffusion
from condgen_bench.models.noise import TrainingNoise
from condgen_bench.models.ema import EMA
from condgen_bench.models.interface import SamplerAxis
from condgen_bench.models.unet import UNet, UNetConfig


@dataclass
class DDPMConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    lr: float = 2e-4  # AdamW peak learning rate
    weight_decay: float = 0.0
    warmup_steps: int = 100  # linear learning-rate warm-up
    grad_clip: float = 1.0  # max gradient norm (0: off)
    ema_decay: float = 0.999  # EMA of the weights used for sampling and the bound
    # sampling used by the evaluation (each can be overridden per call)
    sampler: str = "ddim"  # "ddim" or "ddpm" (ancestral, with the model's variances)
    sampling_steps: int = 50  # steps of either sampler, evenly respaced over the T trained ones (>= T: all)
    eta: float = 0.0  # DDIM noise (0: deterministic given x_T)
    guidance: float = 2.0  # classifier-free guidance scale w (0 uncond, 1 cond, >1 guided)

    def __post_init__(self):
        if self.sampler not in ("ddim", "ddpm"):
            raise ValueError(f"unknown sampler {self.sampler!r}; valid: ['ddim', 'ddpm']")
        if self.sampling_steps < 1:
            raise ValueError(f"sampling_steps must be >= 1, got {self.sampling_steps}")


class DDPMMethod(TrainingNoise):
    """Build from (config, dataset spec); ``train_step`` on a batch; ``sample`` n images for given
    labels and seeds; ``bits_per_dim`` of real images; ``state_dict`` / ``load_state_dict``.

    ``wrap`` is applied to the trained network (the harness passes Ray Train's ``prepare_model``,
    which moves it to the device and wraps it in DDP); the EMA copy is never wrapped. ``accel`` sets the
    training step's precision, memory format and compilation (models/accel.py); sampling and the bound
    run in float32 with the EMA weights whatever the training precision.
    """

    name = "ddpm"
    has_likelihood = True
    sampler_axes = (SamplerAxis("sampler", "sampler"), SamplerAxis("steps", "sampling steps", cost=True),
                    SamplerAxis("eta", "eta"), SamplerAxis("guidance", "guidance w"))

    def __init__(self, config: DDPMConfig, spec: DatasetSpec, device: torch.device | str = "cpu",
                 wrap: Callable[[nn.Module], nn.Module] | None = None, seed: int = 0,
                 accel: Acceleration | None = None):
        self.config = config
        self.spec = spec
        self.device = torch.device(device)
        self.acc = Accelerator(accel, self.device)
        torch.manual_seed(seed)  # the same initial weights on every rank
        self.diffusion = GaussianDiffusion(config.diffusion)
        out_channels = self.diffusion.output_channels(spec.channels)
        self.net = self.acc.prepare(
            UNet(spec.channels, out_channels, spec.num_classes, spec.image_size, config.unet).to(self.device))
        self.ema = EMA(self.net, config.ema_decay)
        self.train_net = self.acc.maybe_compile(wrap(self.net) if wrap else self.net)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scaler = self.acc.scaler()
        self.step = 0
        self.null_label = spec.num_classes
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor | float]:
        """One optimizer step. images: [B, C, H, W] uint8; labels: [B] int64. Returns {"loss", "mse",
        "vb" (NaN unless the variance is learned or t is importance-sampled), "grad_norm"}: 0-dim float32
        tensors on the device (no host sync: the harness reads them once per sync interval), and "lr", a float."""
        x0 = self.acc.images(uint8_to_float(images.to(self.device)))
        y = labels.to(self.device)
        lr = self.config.lr * min(1.0, (self.step + 1) / max(1, self.config.warmup_steps))
        for group in self.opt.param_groups:
            group["lr"] = lr
        with self.acc.autocast():
            terms = self.diffusion.training_losses(self.train_net, x0, y, self.null_label, self.generator)
        loss = terms["loss"].mean()
        grad_norm = self.acc.step(loss, self.opt, self.scaler, self.net.parameters(), self.config.grad_clip)
        self.ema.update(self.net)
        self.step += 1
        return {"loss": loss.detach(), "mse": terms["mse"].mean().detach(), "vb": terms["vb"].mean().detach(),
                "grad_norm": grad_norm, "lr": lr}

    def sampling_settings(self, **overrides) -> dict:
        """The sampler settings an evaluation used (recorded with its metrics): the config's, with
        ``overrides`` (any of sampler_axes) applied; the ancestral sampler ignores eta, so it is left out."""
        unknown = sorted(set(overrides) - {axis.name for axis in self.sampler_axes})
        if unknown:
            raise ValueError(f"unknown sampler settings {unknown} for ddpm; valid: {[a.name for a in self.sampler_axes]}")
        settings = {"sampler": self.config.sampler, "steps": self.config.sampling_steps, "eta": self.config.eta,
                    "guidance": self.config.guidance}
        settings.update({k: v for k, v in overrides.items() if v is not None})
        if settings["sampler"] == "ddpm":
            del settings["eta"]
        return settings

    def network_evaluations(self, **overrides) -> int:
        """Network calls per generated image under these settings (guidance doubles each step)."""
        s = self.sampling_settings(**overrides)
        steps = self.diffusion.respaced(s["steps"] or self.diffusion.num_timesteps).num_timesteps
        return steps * (1 if s["guidance"] in (0.0, 1.0) else 2)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, seeds: torch.Tensor, batch_size: int = 256, **overrides) -> torch.Tensor:
        """Generate with the EMA weights. labels, seeds: [N] int64 -> [N, C, H, W] uint8.

        Image i depends only on (labels[i], seeds[i]) and the settings, not on ``batch_size``."""
        s = self.sampling_settings(**overrides)
        shape = (self.spec.channels, self.spec.image_size, self.spec.image_size)
        out = []
        for start in range(0, len(labels), batch_size):
            x = self.diffusion.sample(self.ema.shadow, labels[start:start + batch_size].to(self.device),
                                      seeds[start:start + batch_size], shape, null_label=self.null_label,
                                      sampler=s["sampler"], steps=s["steps"], eta=s.get("eta", 0.0), guidance=s["guidance"])
            out.append(float_to_uint8(x).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def bits_per_dim(self, images: torch.Tensor, labels: torch.Tensor, seeds: torch.Tensor,
                     t_samples: int | None = None) -> dict[str, torch.Tensor]:
        """Variational bound of the EMA model on real images, per image, in bits/dim.
        images: [B, C, H, W] uint8; labels, seeds: [B]. Returns per-image tensors [B] (see
        GaussianDiffusion.bits_per_dim)."""
        x0 = uint8_to_float(images.to(self.device))
        return self.diffusion.bits_per_dim(self.ema.shadow, x0, labels.to(self.device), seeds, t_samples=t_samples)

    def likelihood_protocol(self) -> dict:
        """How bits_per_dim computes the bound (recorded with the figure)."""
        d = self.config.diffusion
        return {"bpd_timesteps": self.diffusion.num_timesteps, "bpd_clip_x0": d.clip_denoised,
                "bpd_variance": d.variance, "bpd_prediction": d.prediction,
                "bpd_decoder": "Gaussian discretized to 256 levels, open end bins",
                "bpd_conditioning": "true label, no guidance, EMA weights"}

    def state_dict(self) -> dict:
        """Everything needed to resume; random-number states as CPU tensors."""
        state = {"net": self.net.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                 "step": self.step, "generator": self.noise_state()}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.diffusion.t_sampler is not None:
            state["t_sampler"] = self.diffusion.t_sampler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.step = state["step"]
        self.load_noise_state(state["generator"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        if self.diffusion.t_sampler is not None and "t_sampler" in state:
            self.diffusion.t_sampler.load_state_dict(state["t_sampler"])
