"""The ``flow`` method: class-conditional flow matching on the rectified-flow path (Liu et al. 2022;
Lipman et al. 2022). The same UNet as DDPM predicts the velocity of the straight line between an image
and its noise,

    x_t = (1 - t) x_0 + t eps,    v(x_t, t) ~ dx_t/dt = eps - x_0,    t in [0, 1] (0: data, 1: noise),

trained by regression on that velocity with the label dropped at random for classifier-free guidance.
Sampling integrates dx/dt = v from t = 1 to 0 with Euler or Heun steps, any number of them; the
likelihood integrates the same ODE from the image to t = 1 with the divergence of v estimated by
Hutchinson's trick (the instantaneous change of variables of neural ODEs; Grathwohl et al. 2019,
FFJORD), from a uniform dequantization of the 8-bit pixels. It joins the harness through the method
interface (models/interface.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from condgen_bench.datasets.base import DatasetSpec, generated_to_uint8, uint8_to_float
from condgen_bench.models.accel import Acceleration
from condgen_bench.models.interface import SamplerAxis
from condgen_bench.models.noise import NoiseStream
from condgen_bench.models.unet import UNetConfig, tiny_unet_config
from condgen_bench.models.schedule import check_schedule
from condgen_bench.models.unet_method import UNetMethod

SAMPLERS = ("euler", "heun")
T_SAMPLINGS = ("uniform", "logit_normal")
TIME_SCALE = 1000.0  # t in [0, 1] enters the UNet's sinusoidal embedding as 1000 t (DDPM's timestep range)

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x [B, C, H, W], t [B]) -> dx/dt [B, C, H, W]


@dataclass
class FlowConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)
    lr: float = 2e-4  # AdamW peak learning rate
    # after the warm-up: "constant", or "cosine" decay to 0 at the trial's last step (models/schedule.py)
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    warmup_steps: int = 100  # linear learning-rate warm-up
    grad_clip: float = 1.0  # max gradient norm (0: off)
    ema_decay: float = 0.999  # EMA of the weights used for sampling and the likelihood
    p_uncond: float = 0.1  # probability of dropping the label in training (classifier-free guidance)
    # how training draws t: "uniform" on [0, 1], or "logit_normal" (sigmoid of a standard normal: more
    # weight on the middle of the path, Esser et al. 2024)
    t_sampling: str = "uniform"
    # sampling used by the evaluation (each can be overridden per call: the sampler axes)
    sampler: str = "euler"  # "euler" (one network call a step) or "heun" (two: Euler, then the trapezoid)
    sampling_steps: int = 50  # equal steps from t = 1 to t = 0
    guidance: float = 2.0  # classifier-free guidance scale w (0 uncond, 1 cond, >1 guided)
    # the likelihood: Heun steps of the ODE from the image to t = 1 (2 network calls and 2 vector-Jacobian
    # products each) and Hutchinson probes per image (Rademacher; more: less variance, more calls)
    likelihood_steps: int = 32
    likelihood_probes: int = 1

    def __post_init__(self):
        check_schedule(self.lr_schedule)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; valid: {list(SAMPLERS)}")
        if self.t_sampling not in T_SAMPLINGS:
            raise ValueError(f"unknown t_sampling {self.t_sampling!r}; valid: {list(T_SAMPLINGS)}")
        if self.sampling_steps < 1 or self.likelihood_steps < 1 or self.likelihood_probes < 1:
            raise ValueError("sampling_steps, likelihood_steps and likelihood_probes must be >= 1, got "
                             f"{self.sampling_steps}, {self.likelihood_steps}, {self.likelihood_probes}")
        if not 0.0 <= self.p_uncond <= 1.0:
            raise ValueError(f"p_uncond must be in [0, 1], got {self.p_uncond}")


def integrate(velocity: Velocity, x: torch.Tensor, t_from: float, t_to: float, steps: int,
              sampler: str) -> torch.Tensor:
    """Solve dx/dt = velocity(x, t) from ``t_from`` to ``t_to`` in ``steps`` equal steps.
    x: [B, ...] -> [B, ...]. "euler": x + h v(x, t); "heun": the Euler point's velocity averaged with the
    start's (second order, two calls a step)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; valid: {list(SAMPLERS)}")
    times = torch.linspace(t_from, t_to, steps + 1).tolist()
    for t0, t1 in zip(times[:-1], times[1:]):
        h = t1 - t0
        v0 = velocity(x, torch.full((len(x),), t0, device=x.device))
        x_euler = x + h * v0
        if sampler == "euler":
            x = x_euler
        else:
            v1 = velocity(x_euler, torch.full((len(x),), t1, device=x.device))
            x = x + 0.5 * h * (v0 + v1)
    return x


def ode_log_likelihood(velocity: Velocity, x0: torch.Tensor, probes: torch.Tensor, steps: int) -> dict[str, torch.Tensor]:
    """log p_0(x0) of the flow dx/dt = velocity(x, t) whose t = 1 end is a standard normal: carry x0 to
    t = 1 with Heun steps while integrating d log p / dt = -div v, the divergence estimated by Hutchinson,
    eps^T (dv/dx) eps (one vector-Jacobian product per probe and call; the same probes all the way).

    x0: [B, *D]; probes: [P, B, *D] (Rademacher, or standard normal). Returns per-image tensors [B] in nats:
    "log_prior" (log N(x_1; 0, I)), "divergence" (the integral of div v from 0 to 1) and "log_likelihood"
    (their sum)."""

    def augmented(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            v = velocity(x, t)
            div = torch.zeros(len(x), device=x.device)
            for k, eps in enumerate(probes):
                (vjp,) = torch.autograd.grad(v, x, eps, retain_graph=k < len(probes) - 1)
                div = div + (vjp * eps).flatten(1).sum(1)
        return v.detach(), div / len(probes)

    x, total = x0, torch.zeros(len(x0), device=x0.device)
    times = torch.linspace(0.0, 1.0, steps + 1).tolist()
    for t0, t1 in zip(times[:-1], times[1:]):
        h = t1 - t0
        v0, d0 = augmented(x, torch.full((len(x),), t0, device=x.device))
        v1, d1 = augmented(x + h * v0, torch.full((len(x),), t1, device=x.device))
        x = x + 0.5 * h * (v0 + v1)
        total = total + 0.5 * h * (d0 + d1)
    dims = x[0].numel()
    log_prior = -0.5 * (x.flatten(1) ** 2).sum(1) - 0.5 * dims * math.log(2 * math.pi)
    return {"log_prior": log_prior, "divergence": total, "log_likelihood": log_prior + total}


def tiny_config() -> FlowConfig:
    """Flow matching with a tiny UNet, a learning rate that moves it in a few steps and a 2-step likelihood
    (tests, checks)."""
    return FlowConfig(unet=tiny_unet_config(), lr=2e-3, warmup_steps=1, likelihood_steps=2)


class FlowMethod(UNetMethod):
    """Build from (config, dataset spec); ``train_step`` on a batch; ``sample`` images for given labels
    and seeds under any sampler setting; ``bits_per_dim`` of real images from the ODE likelihood. The
    network, its EMA copy, optimizer, ``wrap``, ``accel`` and resuming are UNetMethod's
    (models/unet_method.py); sampling and the likelihood run in float32 with the EMA weights."""

    name = "flow"
    has_likelihood = True
    sampler_axes = (SamplerAxis("sampler", "sampler"), SamplerAxis("steps", "sampling steps", cost=True),
                    SamplerAxis("guidance", "guidance w"))

    def __init__(self, config: FlowConfig, spec: DatasetSpec, device: torch.device | str = "cpu",
                 wrap: Callable[[nn.Module], nn.Module] | None = None, seed: int = 0,
                 accel: Acceleration | None = None):
        super().__init__(config, spec, spec.channels, device, wrap, seed, accel)  # predicts a velocity per pixel

    def _draw(self, shape: tuple[int, ...], kind: str = "normal") -> torch.Tensor:
        """Training noise from this rank's generator, on the device: "normal" or "uniform" draws of ``shape``."""
        draw = torch.randn if kind == "normal" else torch.rand
        return draw(shape, generator=self.generator, device=self.device)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor | float]:
        """One optimizer step on the velocity regression. images: [B, C, H, W] uint8; labels: [B] int64.
        Returns {"loss", "grad_norm"}: 0-dim float32 tensors on the device (no host sync), and "lr", a float."""
        x0 = self.acc.images(uint8_to_float(images.to(self.device)))
        b = len(x0)
        lr = self.warm_up()
        t = (torch.sigmoid(self._draw((b,))) if self.config.t_sampling == "logit_normal"
             else self._draw((b,), "uniform"))
        eps = self._draw(tuple(x0.shape))
        drop = self._draw((b,), "uniform") < self.config.p_uncond
        y = torch.where(drop, torch.full_like(labels.to(self.device), self.null_label), labels.to(self.device))
        tb = t.view(-1, 1, 1, 1)
        x_t = (1 - tb) * x0 + tb * eps
        with self.acc.autocast():
            v = self.train_net(x_t, t * TIME_SCALE, y)
        loss = ((v.float() - (eps - x0.float())) ** 2).mean()
        return {"loss": loss.detach(), "grad_norm": self.update(loss), "lr": lr}

    def velocity(self, labels: torch.Tensor, guidance: float = 1.0) -> Velocity:
        """The EMA network's velocity field for ``labels`` [B] under classifier-free guidance w:
        v_uncond + w (v_cond - v_uncond) (w = 1: one conditional call; w = 0: unconditional)."""
        net = self.ema.shadow
        null = torch.full_like(labels, self.null_label)

        def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if guidance in (0.0, 1.0):
                return net(x, t * TIME_SCALE, null if guidance == 0.0 else labels)
            cond, uncond = net(torch.cat([x, x]), torch.cat([t, t]) * TIME_SCALE, torch.cat([labels, null])).chunk(2)
            return uncond + guidance * (cond - uncond)

        return v

    def sampling_settings(self, **overrides) -> dict:
        """The sampler settings an evaluation used (recorded with its metrics): the config's, with
        ``overrides`` (any of sampler_axes) applied."""
        unknown = sorted(set(overrides) - {axis.name for axis in self.sampler_axes})
        if unknown:
            raise ValueError(f"unknown sampler settings {unknown} for flow; valid: {[a.name for a in self.sampler_axes]}")
        settings = {"sampler": self.config.sampler, "steps": self.config.sampling_steps,
                    "guidance": self.config.guidance}
        settings.update({k: v for k, v in overrides.items() if v is not None})
        if settings["sampler"] not in SAMPLERS or int(settings["steps"]) < 1:
            raise ValueError(f"flow samples with {list(SAMPLERS)} and >= 1 steps, got {settings}")
        return settings

    def network_evaluations(self, **overrides) -> int:
        """Network calls per generated image: a step each (Heun: two), doubled by guidance."""
        s = self.sampling_settings(**overrides)
        calls = int(s["steps"]) * (2 if s["sampler"] == "heun" else 1)
        return calls * (1 if s["guidance"] in (0.0, 1.0) else 2)

    @torch.no_grad()
    def sample_checked(self, labels: torch.Tensor, seeds: torch.Tensor, batch_size: int = 256,
                       **overrides) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate with the EMA weights from t = 1 (noise seeded per image) to t = 0. labels, seeds: [N]
        int64 -> ([N, C, H, W] uint8, [N] bool finite); image i depends only on (labels[i], seeds[i]) and the
        settings."""
        s = self.sampling_settings(**overrides)
        shape = (self.spec.channels, self.spec.image_size, self.spec.image_size)
        images, finite = [], []
        for start in range(0, len(labels), batch_size):
            y = labels[start:start + batch_size].to(self.device)
            x1 = NoiseStream(seeds[start:start + batch_size], shape, self.device).next()
            x0 = integrate(self.velocity(y, float(s["guidance"])), x1, 1.0, 0.0, int(s["steps"]), s["sampler"])
            batch, ok = generated_to_uint8(x0)
            images.append(batch.cpu())
            finite.append(ok.cpu())
        return torch.cat(images), torch.cat(finite)

    def bits_per_dim(self, images: torch.Tensor, labels: torch.Tensor, seeds: torch.Tensor,
                     t_samples: int | None = None) -> dict[str, torch.Tensor]:
        """Bits/dim of real images under the EMA model's ODE, conditional on the true label (no guidance),
        from one uniform dequantization of each image (seeded per image; an unbiased estimate of an upper
        bound on the 8-bit images' bits/dim) and the config's Hutchinson probes and Heun steps.
        t_samples is not used (the ODE has no Monte Carlo over t). images: [B, C, H, W] uint8; labels,
        seeds: [B]. Returns per-image tensors [B], in bits/dim: "total", "prior" (-log N(x_1) of the image's
        end point, on the 8-bit scale) and "divergence" (minus the divergence integral: the flow's volume change)."""
        shape = tuple(images.shape[1:])
        noise = NoiseStream(seeds, shape, self.device)
        u = torch.special.ndtr(noise.next())  # uniform in (0, 1), from the image's own seed
        probes = torch.stack([noise.next().sign() for _ in range(self.config.likelihood_probes)])
        x0 = (images.to(self.device).float() + u) / 127.5 - 1.0  # the dequantized image in [-1, 1]
        parts = ode_log_likelihood(self.velocity(labels.to(self.device)), x0, probes, self.config.likelihood_steps)
        dims = math.prod(shape)
        # from x in [-1, 1] to the 8-bit scale [0, 256): log p(z) = log p(x) - D log 127.5
        to_bits = -1.0 / (dims * math.log(2))
        scale = dims * math.log(127.5)
        prior = to_bits * (parts["log_prior"] - scale)
        divergence = to_bits * parts["divergence"]
        return {"total": (prior + divergence).cpu(), "prior": prior.cpu(), "divergence": divergence.cpu()}

    def likelihood_protocol(self) -> dict:
        """How bits_per_dim computes the figure (recorded with it)."""
        return {"bpd_estimator": "ODE likelihood (instantaneous change of variables), Hutchinson trace",
                "bpd_ode_solver": f"Heun, {self.config.likelihood_steps} equal steps from t = 0 to 1",
                "bpd_probes": f"{self.config.likelihood_probes} Rademacher a image, fixed along the path",
                "bpd_dequantization": "uniform, one draw a image (an upper bound on 8-bit bits/dim in expectation)",
                "bpd_t_samples": "not used: no Monte Carlo over t",
                "bpd_conditioning": "true label, no guidance, EMA weights"}
