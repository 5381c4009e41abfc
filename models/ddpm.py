"""The ``ddpm`` method: a class-conditional UNet trained as a Gaussian diffusion (epsilon, x0 or v
prediction; fixed or learned variances), with EMA weights for sampling and classifier-free guidance. It joins the harness through the method
interface in models/__init__.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from condgen_bench.datasets.base import DatasetSpec, generated_to_uint8, uint8_to_float
from condgen_bench.models.accel import Acceleration
from condgen_bench.models.diffusion import DiffusionConfig, GaussianDiffusion
from condgen_bench.models.interface import SamplerAxis
from condgen_bench.models.unet import UNetConfig, tiny_unet_config
from condgen_bench.models.schedule import check_schedule
from condgen_bench.models.unet_method import UNetMethod


@dataclass
class DDPMConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    lr: float = 2e-4  # AdamW peak learning rate
    # after the warm-up: "constant", or "cosine" decay to 0 at the trial's last step (models/schedule.py)
    lr_schedule: str = "constant"
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
        check_schedule(self.lr_schedule)
        if self.sampler not in ("ddim", "ddpm"):
            raise ValueError(f"unknown sampler {self.sampler!r}; valid: ['ddim', 'ddpm']")
        if self.sampling_steps < 1:
            raise ValueError(f"sampling_steps must be >= 1, got {self.sampling_steps}")


def tiny_config() -> DDPMConfig:
    """DDPM with a tiny UNet, 50 timesteps and a learning rate that moves it in a few steps (tests, checks)."""
    return DDPMConfig(unet=tiny_unet_config(), diffusion=DiffusionConfig(timesteps=50), lr=2e-3, warmup_steps=1)


class DDPMMethod(UNetMethod):
    """Build from (config, dataset spec); ``train_step`` on a batch; ``sample`` n images for given
    labels and seeds; ``bits_per_dim`` of real images; ``state_dict`` / ``load_state_dict``.

    The network, its EMA copy, optimizer, ``wrap`` and ``accel`` are UNetMethod's (models/unet_method.py);
    sampling and the bound run in float32 with the EMA weights whatever the training precision.
    """

    name = "ddpm"
    has_likelihood = True
    sampler_axes = (SamplerAxis("sampler", "sampler"), SamplerAxis("steps", "sampling steps", cost=True),
                    SamplerAxis("eta", "eta"), SamplerAxis("guidance", "guidance w"))

    def __init__(self, config: DDPMConfig, spec: DatasetSpec, device: torch.device | str = "cpu",
                 wrap: Callable[[nn.Module], nn.Module] | None = None, seed: int = 0,
                 accel: Acceleration | None = None):
        self.diffusion = GaussianDiffusion(config.diffusion)
        super().__init__(config, spec, self.diffusion.output_channels(spec.channels), device, wrap, seed, accel)

    def place(self, device: torch.device) -> None:
        """The diffusion's schedule arrays to ``device``, once."""
        self.diffusion.to(device)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor | float]:
        """One optimizer step. images: [B, C, H, W] uint8; labels: [B] int64. Returns {"loss", "mse",
        "vb" (NaN unless the variance is learned or t is importance-sampled), "grad_norm"}: 0-dim float32
        tensors on the device (no host sync: the harness reads them once per sync interval), and "lr", a float."""
        x0 = self.acc.images(uint8_to_float(images.to(self.device)))
        y = labels.to(self.device)
        lr = self.warm_up()
        with self.acc.autocast():
            terms = self.diffusion.training_losses(self.train_net, x0, y, self.null_label, self.generator)
        loss = terms["loss"].mean()
        grad_norm = self.update(loss)
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
    def sample_checked(self, labels: torch.Tensor, seeds: torch.Tensor, batch_size: int = 256,
                       **overrides) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate with the EMA weights. labels, seeds: [N] int64 -> ([N, C, H, W] uint8, [N] bool finite).

        Image i depends only on (labels[i], seeds[i]) and the settings, not on ``batch_size``."""
        s = self.sampling_settings(**overrides)
        shape = (self.spec.channels, self.spec.image_size, self.spec.image_size)
        images, finite = [], []
        for start in range(0, len(labels), batch_size):
            x = self.diffusion.sample(self.ema.shadow, labels[start:start + batch_size].to(self.device),
                                      seeds[start:start + batch_size], shape, null_label=self.null_label,
                                      sampler=s["sampler"], steps=s["steps"], eta=s.get("eta", 0.0), guidance=s["guidance"])
            batch, ok = generated_to_uint8(x)
            images.append(batch.cpu())
            finite.append(ok.cpu())
        return torch.cat(images), torch.cat(finite)

    @torch.no_grad()
    def bits_per_dim(self, images: torch.Tensor, labels: torch.Tensor, seeds: torch.Tensor,
                     t_samples: int | None = None) -> dict[str, torch.Tensor]:
        """Variational bound of the EMA model on real images, per image, in bits/dim.
        images: [B, C, H, W] uint8; labels, seeds: [B]. Returns per-image tensors [B] on the CPU (see
        GaussianDiffusion.bits_per_dim)."""
        x0 = uint8_to_float(images.to(self.device))
        parts = self.diffusion.bits_per_dim(self.ema.shadow, x0, labels.to(self.device), seeds, t_samples=t_samples)
        return {key: value.cpu() for key, value in parts.items()}

    def likelihood_protocol(self) -> dict:
        """How bits_per_dim computes the bound (recorded with the figure)."""
        d = self.config.diffusion
        return {"bpd_timesteps": self.diffusion.num_timesteps, "bpd_clip_x0": d.clip_denoised,
                "bpd_variance": d.variance, "bpd_prediction": d.prediction,
                "bpd_decoder": "Gaussian discretized to 256 levels, open end bins",
                "bpd_conditioning": "true label, no guidance, EMA weights"}

    def extra_state(self) -> dict:
        """The importance sampler's loss history, where t is importance-sampled."""
        return {"t_sampler": self.diffusion.t_sampler.state_dict()} if self.diffusion.t_sampler is not None else {}

    def load_extra_state(self, state: dict) -> None:
        if self.diffusion.t_sampler is not None and "t_sampler" in state:
            self.diffusion.t_sampler.load_state_dict(state["t_sampler"])
