"""The interface every generative method offers the harness (harness/worker.py, evaluation.py,
finalists.py use nothing else). A family implements it on its method class and registers the class
with its config dataclass in models/__init__.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class SamplerAxis:
    """One setting of a family's sampler that an evaluation may vary (EvalConfig.sampling_sweep); its
    default is the family's config value, which ``sampling_settings()`` fills in."""

    name: str  # the keyword of sample() / sampling_settings() and the key in eval.sampling_sweep
    label: str  # how the report names it ("guidance w")
    cost: bool = False  # network evaluations per image grow with it: the report's sampling chart's x axis


@runtime_checkable
class Method(Protocol):
    """Built as ``cls(config, spec, device="cpu", wrap=None, seed=0, accel=None)``: config, the family's
    dataclass; spec, a datasets.base.DatasetSpec (channels, image size, classes); wrap, applied to the trained
    network (Ray Train's prepare_model: the device, DDP); accel, a models.accel.Acceleration (precision,
    channels-last, compile; None: fp32). The weights are drawn on the CPU (the same on every device) and the
    method is then put on ``device`` (``to``).

    Where outputs live: ``train_step``'s statistics stay on the method's device (0-dim tensors, no host read);
    ``sample`` and ``bits_per_dim`` hand back CPU tensors (the harness reads them); ``state_dict`` holds the
    weights on the device and the random-number states as CPU tensors. Inputs may come from the host or the
    device: a method moves what it is given."""

    name: str  # the registry name, e.g. "ddpm"
    has_likelihood: bool  # True for a LikelihoodMethod (bits_per_dim, likelihood_protocol)
    step: int  # training steps taken (restored with the state)
    # what a sampling sweep may vary, in the order a setting's name lists them; () for a fixed sampler
    sampler_axes: ClassVar[tuple[SamplerAxis, ...]]

    def to(self, device: torch.device | str) -> "Method":
        """Put the method on ``device`` before it trains (networks, a family's own tensors such as a diffusion's
        schedule, once); the optimizers, loss scalers and training noise are made for it. Returns self."""

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor | float]:
        """One update on images [B, C, H, W] uint8 and labels [B] int64. Returns 0-dim tensors on the
        device (no host sync) or floats: "loss" and any "loss_*" must stay finite; "d_wins" (GANs) is 1 on a
        step the discriminator wins completely."""

    def set_training_length(self, total_steps: int) -> None:
        """The trial's number of train_step calls (epochs x batches an epoch), told before training: a
        schedule that decays to the trial's end ("cosine", models/schedule.py) needs it."""

    def sample(self, labels: torch.Tensor, seeds: torch.Tensor, batch_size: int = 256, **settings) -> torch.Tensor:
        """labels [N], seeds [N] (CPU) -> images [N, C, H, W] uint8 on the CPU; image i a function of (labels[i],
        seeds[i]) and the settings (each family's sampler axes; unknown ones raise ValueError)."""

    def sample_checked(self, labels: torch.Tensor, seeds: torch.Tensor, batch_size: int = 256,
                       **settings) -> tuple[torch.Tensor, torch.Tensor]:
        """sample()'s images and finite [N] bool on the CPU: False where the sampler produced a NaN or an
        infinite value in image i (datasets/base.py generated_to_uint8), which the evaluation counts as a
        failed sample."""

    def sampling_settings(self, **settings) -> dict:
        """The settings a sample call with ``settings`` uses, the family's defaults filled in (recorded); an
        axis the resulting setting ignores is left out (DDPM's ancestral sampler has no eta), so two settings
        that sample alike compare equal. Unknown axes raise ValueError."""

    def network_evaluations(self, **settings) -> int:
        """Network calls per generated image under ``settings``."""

    def state_dict(self) -> dict:
        """Everything needed to resume (random-number states as CPU tensors)."""

    def load_state_dict(self, state: dict) -> None:
        """Resume from ``state_dict()`` output, onto this method's device."""

    def seed_noise(self, seed: int) -> None:
        """Seed this rank's training noise."""

    def noise_state(self) -> torch.Tensor:
        """This rank's training-noise generator state: a CPU uint8 tensor, in its device type's format."""

    def noise_kind(self) -> str:
        """The device type whose format noise_state has ("cpu", "cuda")."""

    def load_noise_state(self, state: torch.Tensor) -> bool:
        """Continue this rank's training noise from ``noise_state()`` output; False (nothing changed) for a
        state of another device type's format, which the harness then reseeds (harness/steps.py)."""


@runtime_checkable
class LikelihoodMethod(Method, Protocol):
    """A Method with a likelihood figure (has_likelihood True): DDPM's bound; a GAN has none."""

    def bits_per_dim(self, images: torch.Tensor, labels: torch.Tensor, seeds: torch.Tensor,
                     t_samples: int | None = None) -> dict[str, torch.Tensor]:
        """Bits/dim of real images [B, C, H, W] uint8 (labels [B] their classes, seeds [B] any noise the
        estimate draws; t_samples: a cheaper Monte Carlo estimate where the method has one) -> per-image
        tensors [B] on the CPU: "total", and any parts of it ("prior", ...), each recorded as bpd_<part>."""

    def likelihood_protocol(self) -> dict:
        """How bits_per_dim computes the bound (recorded with the figure)."""


class CheckedSampling:
    """``sample`` of a family that implements ``sample_checked`` (every family here): its images alone."""

    def sample(self, labels: torch.Tensor, seeds: torch.Tensor, batch_size: int = 256, **settings) -> torch.Tensor:
        """labels [N], seeds [N] -> images [N, C, H, W] uint8 on the CPU (Method.sample)."""
        return self.sample_checked(labels, seeds, batch_size, **settings)[0]
