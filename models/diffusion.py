"""Gaussian diffusion: schedules, the forward process, the training loss, the samplers and the
variational bound. Everything about noise lives here; the network is any callable
``net(x_t, t, y) -> epsilon`` (see models/unet.py).

Conventions (Ho et al. 2020, Nichol & Dhariwal 2021): timesteps are 0-indexed, t = 0..T-1;
x_0 is data scaled to [-1, 1]; ``alphas_cumprod[t]`` is abar_t, the signal fraction of x_t.
Schedule arrays are computed in float64 and gathered to float32 per batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Net = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class DiffusionConfig:
    timesteps: int = 1000  # T, number of diffusion steps used in training and in the bound
    schedule: str = "linear"  # beta schedule: "linear" (Ho et al.) or "cosine" (Nichol & Dhariwal)
    variance: str = "fixed_large"  # reverse-process variance: "fixed_large" (beta_t) or "fixed_small" (posterior)
    p_uncond: float = 0.1  # probability of dropping the label in training (classifier-free guidance)
    clip_denoised: bool = True  # clip the predicted x_0 to [-1, 1] in samplers and in the bound


# ---------------------------------------------------------------------------------------------
# Schedules


def linear_betas(timesteps: int) -> torch.Tensor:
    """Ho et al.'s schedule, 1e-4..0.02 at T=1000, rescaled so other T keep the same shape. -> [T] float64.

    The last beta is 20 / T, so T must exceed 20 (use the cosine schedule for fewer steps)."""
    if timesteps <= 20:
        raise ValueError(f"the linear schedule needs timesteps > 20 (its last beta is 20/T), got {timesteps}")
    scale = 1000.0 / timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's schedule: abar(t) = cos^2(((t/T + s) / (1 + s)) * pi/2). -> [T] float64."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    abar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


SCHEDULES: dict[str, Callable[[int], torch.Tensor]] = {"linear": linear_betas, "cosine": cosine_betas}


def named_betas(name: str, timesteps: int) -> torch.Tensor:
    """Beta schedule by name -> [T] float64."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown beta schedule {name!r}; valid: {sorted(SCHEDULES)}")
    return SCHEDULES[name](timesteps)


# ---------------------------------------------------------------------------------------------
# Densities


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats (broadcasting shapes)."""
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) for x on the 256 levels of 8-bit data scaled to [-1, 1], under N(mean, exp(log_scale)^2)
    integrated over each level's bin of width 2/255; the end bins are open (-inf, -1+1/255] and [1-1/255, inf).

    x, mean, log_scale: same shape (x must lie on the grid). Returns log-probabilities (nats), same shape.
    """
    inv_std = torch.exp(-log_scale)
    upper = (x - mean + 1.0 / 255) * inv_std
    lower = (x - mean - 1.0 / 255) * inv_std
    log_cdf_upper = torch.special.log_ndtr(upper)  # log P(z <= upper)
    log_sf_lower = torch.special.log_ndtr(-lower)  # log P(z > lower)
    # log(Phi(upper) - Phi(lower)), written on the side of the bin away from the far tail so that
    # neither term underflows: left of the mode via the CDF, right of it via the survival function.
    left = log_cdf_upper + _log1mexp(torch.special.log_ndtr(lower) - log_cdf_upper)
    right = log_sf_lower + _log1mexp(torch.special.log_ndtr(-upper) - log_sf_lower)
    mid = torch.where(lower > 0, right, left)
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_sf_lower, mid))


def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(d)) for d <= 0, floored at log(1e-12) where the bin's mass vanishes."""
    return torch.log(torch.clamp(-torch.expm1(d.clamp(max=0)), min=1e-12))


# ---------------------------------------------------------------------------------------------
# Per-sample noise


class NoiseStream:
    """Standard normal noise where sample i's draws depend only on ``seeds[i]``.

    Each call to ``next()`` returns the next [B, *shape] tensor; sample i's k-th draw is the same
    whatever the batch it sits in, so sampling is independent of batch size and worker count.
    """

    def __init__(self, seeds: torch.Tensor, shape: tuple[int, ...], device: torch.device | str = "cpu"):
        self.generators = []
        for s in seeds.tolist():
            g = torch.Generator()
            g.manual_seed(int(s))
            self.generators.append(g)
        self.shape = tuple(shape)
        self.device = device

    def next(self) -> torch.Tensor:
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.generators]).to(self.device)

    def randint(self, high: int) -> torch.Tensor:
        """One integer in [0, high) per sample -> [B] int64."""
        return torch.cat([torch.randint(high, (1,), generator=g) for g in self.generators]).to(self.device)


# ---------------------------------------------------------------------------------------------
# The process


class GaussianDiffusion:
    """The forward process q, the reverse process p given an epsilon-predicting network, its
    training loss, the DDPM and DDIM samplers, and the variational bound in bits/dim."""

    def __init__(self, config: DiffusionConfig):
        if config.variance not in ("fixed_large", "fixed_small"):
            raise ValueError(f"unknown variance type {config.variance!r}; valid: ['fixed_large', 'fixed_small']")
        self.config = config
        betas = named_betas(config.schedule, config.timesteps)
        self.num_timesteps = len(betas)
        alphas = 1.0 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        self.betas = betas
        self.alphas_cumprod = abar
        self.alphas_cumprod_prev = abar_prev
        self.sqrt_alphas_cumprod = abar.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1 - abar).sqrt()
        self.sqrt_recip_alphas_cumprod = (1 / abar).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1 / abar - 1).sqrt()
        # q(x_{t-1} | x_t, x_0) = N(coef1 * x_0 + coef2 * x_t, posterior_variance)
        self.posterior_variance = betas * (1 - abar_prev) / (1 - abar)
        # the variance at t = 0 is 0: use t = 1's value so the log stays finite (as improved-diffusion)
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )
        self.posterior_mean_coef1 = betas * abar_prev.sqrt() / (1 - abar)
        self.posterior_mean_coef2 = (1 - abar_prev) * alphas.sqrt() / (1 - abar)
        if config.variance == "fixed_large":
            self.model_log_variance = torch.log(torch.cat([self.posterior_variance[1:2], betas[1:]]))
        else:
            self.model_log_variance = self.posterior_log_variance_clipped

    @staticmethod
    def _gather(arr: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """arr: [T] float64, t: [B] int64 -> [B, 1, 1, 1] in like's dtype and device."""
        out = arr.to(like.device)[t].to(like.dtype)
        return out.view(-1, *([1] * (like.dim() - 1)))

    # forward process ---------------------------------------------------------------------

    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q(x_t | x_0). x0: [B, C, H, W], t: [B] -> mean [B, C, H, W], variance and log-variance [B, 1, 1, 1]."""
        mean = self._gather(self.sqrt_alphas_cumprod, t, x0) * x0
        var = self._gather(1.0 - self.alphas_cumprod, t, x0)
        logvar = self._gather(torch.log(1.0 - self.alphas_cumprod), t, x0)
        return mean, var, logvar

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) with the given standard normal noise. x0, noise: [B, C, H, W], t: [B]."""
        return self._gather(self.sqrt_alphas_cumprod, t, x0) * x0 + self._gather(
            self.sqrt_one_minus_alphas_cumprod, t, x0) * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
        """q(x_{t-1} | x_t, x_0): mean [B, C, H, W], variance and clipped log-variance [B, 1, 1, 1]."""
        mean = self._gather(self.posterior_mean_coef1, t, xt) * x0 + self._gather(self.posterior_mean_coef2, t, xt) * xt
        return mean, self._gather(self.posterior_variance, t, xt), self._gather(self.posterior_log_variance_clipped, t, xt)

    # reverse process ---------------------------------------------------------------------

    def predict_x0(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_0 implied by x_t and a predicted epsilon. All [B, C, H, W] but t: [B]."""
        return self._gather(self.sqrt_recip_alphas_cumprod, t, xt) * xt - self._gather(
            self.sqrt_recipm1_alphas_cumprod, t, xt) * eps

    def predict_eps(self, xt: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """epsilon implied by x_t and x_0. All [B, C, H, W] but t: [B]."""
        return (self._gather(self.sqrt_recip_alphas_cumprod, t, xt) * xt - x0) / self._gather(
            self.sqrt_recipm1_alphas_cumprod, t, xt)

    def p_mean_variance(self, eps: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
        """p(x_{t-1} | x_t) from the network's epsilon: mean, log-variance ([B, 1, 1, 1]) and predicted x_0."""
        x0 = self.predict_x0(xt, t, eps)
        if self.config.clip_denoised:
            x0 = x0.clamp(-1, 1)
        mean, _, _ = self.q_posterior(x0, xt, t)
        return mean, self._gather(self.model_log_variance, t, xt), x0

    # training ----------------------------------------------------------------------------

    def training_loss(self, net: Net, x0: torch.Tensor, y: torch.Tensor, null_label: int,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """The simple loss of Ho et al.: || eps - net(x_t, t, y') ||^2, averaged over pixels.

        x0: [B, C, H, W] in [-1, 1]; y: [B] labels; with probability p_uncond a label is replaced by
        ``null_label`` (classifier-free guidance). t is uniform over 0..T-1. Returns [B].
        """
        b = x0.shape[0]
        device = generator.device if generator is not None else x0.device  # draw where the generator lives
        t = torch.randint(self.num_timesteps, (b,), generator=generator, device=device).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=device).to(x0.device)
        drop = torch.rand(b, generator=generator, device=device).to(x0.device) < self.config.p_uncond
        y = torch.where(drop, torch.full_like(y, null_label), y)
        eps = net(self.q_sample(x0, t, noise), t, y)
        return (eps - noise).pow(2).flatten(1).mean(1)

    # sampling ----------------------------------------------------------------------------

    @staticmethod
    def guided_eps(net: Net, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, guidance: float,
                   null_label: int) -> torch.Tensor:
        """Classifier-free guidance: eps_uncond + w * (eps_cond - eps_uncond).

        w = 0: unconditional; w = 1: conditional (one network call); w > 1: guided.
        x: [B, C, H, W], t: [B], y: [B] -> [B, C, H, W].
        """
        if guidance == 1.0:
            return net(x, t, y)
        null = torch.full_like(y, null_label)
        if guidance == 0.0:
            return net(x, t, null)
        eps = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
        cond, uncond = eps.chunk(2)
        return uncond + guidance * (cond - uncond)

    def ddim_timesteps(self, steps: int) -> list[int]:
        """``steps`` timesteps evenly spaced over 0..T-1, descending, always ending at 0."""
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"sampling steps must be in 1..{self.num_timesteps}, got {steps}")
        ts = torch.linspace(0, self.num_timesteps - 1, steps).round().long().unique().tolist()
        return sorted(ts, reverse=True)

    @torch.no_grad()
    def sample(self, net: Net, labels: torch.Tensor, seeds: torch.Tensor, shape: tuple[int, int, int], *,
               null_label: int, sampler: str = "ddim", steps: int = 50, eta: float = 0.0,
               guidance: float = 1.0) -> torch.Tensor:
        """Generate images. labels, seeds: [B] int64; shape: (C, H, W). Returns [B, C, H, W] in [-1, 1].

        Sample i depends only on (labels[i], seeds[i]) and the settings, not on the batch it is in.
        ``sampler``: "ddpm" (ancestral, all T steps; ``steps`` ignored) or "ddim" (``steps`` steps, ``eta``).
        """
        device = labels.device
        noise = NoiseStream(seeds, shape, device)
        x = noise.next()
        if sampler == "ddpm":
            for i in reversed(range(self.num_timesteps)):
                t = torch.full((len(labels),), i, dtype=torch.long, device=device)
                eps = self.guided_eps(net, x, t, labels, guidance, null_label)
                mean, logvar, _ = self.p_mean_variance(eps, x, t)
                z = noise.next()
                x = mean + (torch.exp(0.5 * logvar) * z if i > 0 else 0.0)
        elif sampler == "ddim":
            ts = self.ddim_timesteps(steps)
            for i, cur in enumerate(ts):
                prev = ts[i + 1] if i + 1 < len(ts) else -1
                t = torch.full((len(labels),), cur, dtype=torch.long, device=device)
                eps = self.guided_eps(net, x, t, labels, guidance, null_label)
                x0 = self.predict_x0(x, t, eps)
                if self.config.clip_denoised:
                    x0 = x0.clamp(-1, 1)
                    eps = self.predict_eps(x, t, x0)
                abar = self.alphas_cumprod[cur].item()
                abar_prev = self.alphas_cumprod[prev].item() if prev >= 0 else 1.0
                sigma = eta * math.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
                x = math.sqrt(abar_prev) * x0 + math.sqrt(max(1 - abar_prev - sigma**2, 0.0)) * eps
                z = noise.next()
                if sigma > 0 and prev >= 0:
                    x = x + sigma * z
        else:
            raise ValueError(f"unknown sampler {sampler!r}; valid: ['ddim', 'ddpm']")
        return x.clamp(-1, 1)

    # likelihood --------------------------------------------------------------------------

    def prior_kl(self, x0: torch.Tensor) -> torch.Tensor:
        """KL(q(x_T | x_0) || N(0, I)) summed over dimensions. x0: [B, C, H, W] -> [B] nats."""
        t = torch.full((x0.shape[0],), self.num_timesteps - 1, dtype=torch.long, device=x0.device)
        mean, _, logvar = self.q_mean_variance(x0, t)
        return normal_kl(mean, logvar, torch.zeros_like(mean), torch.zeros_like(logvar)).flatten(1).sum(1)

    def vb_term(self, net: Net, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """One term of the bound, summed over dimensions: the decoder's -log p(x_0 | x_1) where t == 0,
        KL(q(x_t | x_{t+1}, x_0) || p(x_t | x_{t+1})) elsewhere (in this module's 0-indexed t, the term
        for step t compares the distributions of x_{t-1} given x_t). x0, noise: [B, C, H, W]; y, t: [B]
        -> [B] nats."""
        xt = self.q_sample(x0, t, noise)
        true_mean, _, true_logvar = self.q_posterior(x0, xt, t)
        mean, logvar, _ = self.p_mean_variance(net(xt, t, y), xt, t)
        kl = normal_kl(true_mean, true_logvar, mean, logvar).flatten(1).sum(1)
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar.expand_as(mean)).flatten(1).sum(1)
        return torch.where(t == 0, nll, kl)

    @torch.no_grad()
    def bits_per_dim(self, net: Net, x0: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor,
                     t_samples: int | None = None) -> dict[str, torch.Tensor]:
        """The variational bound on -log p(x_0 | y), per image, in bits per dimension.

        bound = KL(q(x_T|x_0) || p(x_T)) + sum_{t>=1} KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) - log p(x_0|x_1)

        x0: [B, C, H, W] real images on the 8-bit grid in [-1, 1]; y: [B] their labels; seeds: [B] per-image
        seeds for the noise. ``t_samples=None`` sums every term (T network calls); an integer K computes the
        prior and decoder terms exactly and estimates the sum of the T-1 KL terms by stratified Monte Carlo
        (K network calls, unbiased per image). Returns per-image tensors [B]: "total", "prior", "decoder",
        "kl" (all bits/dim).
        """
        b = x0.shape[0]
        dims = x0[0].numel()
        noise = NoiseStream(seeds, tuple(x0.shape[1:]), x0.device)
        to_bpd = 1.0 / (dims * math.log(2.0))
        prior = self.prior_kl(x0)
        zero = torch.zeros(b, dtype=torch.long, device=x0.device)
        decoder = self.vb_term(net, x0, y, zero, noise.next())
        kl_sum = torch.zeros(b, dtype=torch.float64, device=x0.device)
        if t_samples is None or t_samples >= self.num_timesteps - 1:
            for i in range(1, self.num_timesteps):
                t = torch.full((b,), i, dtype=torch.long, device=x0.device)
                kl_sum += self.vb_term(net, x0, y, t, noise.next()).double()
        else:
            # stratified Monte Carlo: K disjoint strata of 1..T-1; one t drawn uniformly inside each
            # stratum, per image; weighting each term by its stratum's width makes the sum unbiased.
            bounds = torch.linspace(1, self.num_timesteps, t_samples + 1).round().long().tolist()
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                t = lo + noise.randint(hi - lo)
                kl_sum += (hi - lo) * self.vb_term(net, x0, y, t, noise.next()).double()
        total = prior.double() + decoder.double() + kl_sum
        return {"total": total * to_bpd, "prior": prior.double() * to_bpd, "decoder": decoder.double() * to_bpd,
                "kl": kl_sum * to_bpd}
