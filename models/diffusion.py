"""Gaussian diffusion: schedules, the forward process, the training objectives, the samplers and the
variational bound. Everything about noise lives here; the network is any callable
``net(x_t, t, y) -> output`` (see models/unet.py) whose output this module interprets.

Conventions (Ho et al. 2020, Nichol & Dhariwal 2021): timesteps are 0-indexed, t = 0..T-1;
x_0 is data scaled to [-1, 1]; ``alphas_cumprod[t]`` is abar_t, the signal fraction of x_t.
Schedule arrays are computed in float64 on the host, copied to the process's device once (``to``), and
gathered there to the batch's dtype.

The network predicts epsilon, x_0 or v = sqrt(abar) eps - sqrt(1 - abar) x_0 (Salimans & Ho 2022),
in its first C output channels. With a learned variance it has C more channels, v_var in [-1, 1]
(unbounded in practice), and the reverse log-variance is frac * log(beta_t) + (1 - frac) *
log(beta~_t) with frac = (v_var + 1) / 2 (Nichol & Dhariwal; beta~_0 is clipped to beta~_1); that model is trained with the hybrid
loss L_simple + lambda * L_vb, the bound term seeing the mean through a stop-gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from condgen_bench.models.noise import NoiseStream
from condgen_bench.models.registry import lookup

Net = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


PREDICTIONS = ("eps", "x0", "v")
VARIANCES = ("fixed_large", "fixed_small", "learned")
T_SAMPLERS = ("uniform", "importance")
# the schedule arrays a process reads per batch (GaussianDiffusion._gather), kept on its device
GATHERED = ("sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod", "one_minus_alphas_cumprod",
            "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
            "sqrt_alphas_cumprod_prev", "sqrt_one_minus_alphas_cumprod_prev", "sqrt_alphas", "sqrt_betas",
            "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
            "log_variance_large", "log_variance_small", "log_betas", "timestep_map")


@dataclass
class DiffusionConfig:
    timesteps: int = 1000  # T, number of diffusion steps used in training and in the bound
    # beta schedule: "linear" (Ho et al.), "cosine" (Nichol & Dhariwal) or "vp" (the VP SDE discretized to T
    # steps, for the few-step processes of denoising diffusion GANs)
    schedule: str = "linear"
    prediction: str = "eps"  # what the network predicts: "eps" (the noise), "x0" (the clean image) or "v"
    # reverse-process variance: "fixed_large" (beta_t), "fixed_small" (the posterior's beta~_t) or "learned"
    # (per pixel between the two, trained with the hybrid loss)
    variance: str = "fixed_large"
    vb_weight: float = 0.001  # lambda of the hybrid loss L_simple + lambda * L_vb (learned variance only)
    # how training draws t: "uniform", or "importance" (t with probability ~ sqrt(E[L_t^2]) of the bound's
    # term, from the last 10 values seen at each t; losses reweighted by 1 / (T p_t) so the objective is
    # unchanged; uniform until every t has 10 values)
    t_sampling: str = "uniform"
    p_uncond: float = 0.1  # probability of dropping the label in training (classifier-free guidance)
    clip_denoised: bool = True  # clip the predicted x_0 to [-1, 1] in samplers and in the bound

    def __post_init__(self):
        for key, valid in (("schedule", SCHEDULES), ("prediction", PREDICTIONS), ("variance", VARIANCES),
                           ("t_sampling", T_SAMPLERS)):
            if getattr(self, key) not in valid:
                raise ValueError(f"unknown diffusion.{key} {getattr(self, key)!r}; valid: {list(valid)}")
        if self.timesteps < 1 or not 0.0 <= self.p_uncond <= 1.0:
            raise ValueError(f"diffusion.timesteps must be >= 1 and p_uncond in [0, 1], got {self.timesteps}, "
                             f"{self.p_uncond}")


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


# The variance-preserving SDE (Song et al. 2021) dx = -beta(s) x / 2 ds + sqrt(beta(s)) dw, s in [0, 1], with
# beta(s) = VP_BETA_MIN + s (VP_BETA_MAX - VP_BETA_MIN), as DDGAN uses it (Xiao et al. 2022).
VP_BETA_MIN = 0.1  # beta(0): the noise rate at the data end
VP_BETA_MAX = 20.0  # beta(1): the noise rate at the prior end (abar(1) = exp(-10.05), about 4e-5)


def vp_betas(timesteps: int) -> torch.Tensor:
    """The VP SDE at s_i = i / T, i = 1..T: abar_i = exp(-(beta_min s_i + (beta_max - beta_min) s_i^2 / 2)), the
    SDE's signal fraction at s_i, and beta_i = 1 - abar_i / abar_{i-1} with abar_0 = 1. -> [T] float64.

    Valid for any T >= 1; meant for few steps (DDGAN uses T = 2..8), where each step removes much noise."""
    if timesteps < 1:
        raise ValueError(f"the vp schedule needs timesteps >= 1, got {timesteps}")
    s = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    abar = torch.exp(-(VP_BETA_MIN * s + 0.5 * (VP_BETA_MAX - VP_BETA_MIN) * s**2))
    return 1 - abar[1:] / abar[:-1]


SCHEDULES: dict[str, Callable[[int], torch.Tensor]] = {"linear": linear_betas, "cosine": cosine_betas,
                                                       "vp": vp_betas}


def named_betas(name: str, timesteps: int) -> torch.Tensor:
    """Beta schedule by name -> [T] float64."""
    return lookup(SCHEDULES, name, "beta schedule")(timesteps)


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
# Drawing t for training


class ImportanceSampler:
    """Nichol & Dhariwal's loss-aware sampler of t: p_t ~ sqrt(mean of the last ``history`` values of
    the bound's term at t), mixed with ``uniform_prob`` of uniform; uniform until every t has its history.
    Per process: under DDP every rank keeps its own history (each rank's objective stays unbiased).

    Its state lives on the training device (``to``) and is read and updated there: drawing t and recording
    the terms make no host synchronisation."""

    def __init__(self, num_timesteps: int, history: int = 10, uniform_prob: float = 0.001):
        self.num_timesteps = num_timesteps
        self.history = history
        self.uniform_prob = uniform_prob
        # each t's newest values as a ring buffer (column ``counts[t] % history`` is written next), plus one
        # column that takes the writes a batch makes beyond a t's history (they would be overwritten anyway)
        self.ring = torch.zeros(num_timesteps, history + 1, dtype=torch.float64)
        self.counts = torch.zeros(num_timesteps, dtype=torch.long)  # values seen at each t, ever

    @property
    def losses(self) -> torch.Tensor:
        """The kept values [T, history] (in ring order; the probabilities do not depend on it)."""
        return self.ring[:, :self.history]

    def to(self, device: torch.device | str) -> ImportanceSampler:
        """Move the state to ``device`` (in place; returns self)."""
        self.ring, self.counts = self.ring.to(device), self.counts.to(device)
        return self

    def probabilities(self) -> torch.Tensor:
        """[T] float64 on the state's device, summing to 1."""
        uniform = torch.full((self.num_timesteps,), 1.0 / self.num_timesteps, dtype=torch.float64,
                             device=self.ring.device)
        p = self.losses.pow(2).mean(1).sqrt()
        p = p / p.sum()  # NaN before any value: not chosen below
        p = p * (1 - self.uniform_prob) + self.uniform_prob / self.num_timesteps
        return torch.where((self.counts >= self.history).all(), p, uniform)

    def sample(self, batch: int, generator: torch.Generator | None, device) -> tuple[torch.Tensor, torch.Tensor]:
        """-> t [batch] int64 and weights 1 / (T p_t) [batch] float32, on ``device`` (the state's)."""
        p = self.probabilities()
        u = torch.rand(batch, generator=generator, device=p.device, dtype=torch.float64)
        t = torch.searchsorted(p.cumsum(0), u * p.sum()).clamp(max=self.num_timesteps - 1)
        weights = 1.0 / (self.num_timesteps * p[t])
        return t.to(device), weights.float().to(device)

    def update(self, t: torch.Tensor, terms: torch.Tensor) -> None:
        """Remember the bound's terms [B] seen at timesteps t [B] (the newest ``history`` per t, in batch order
        within a batch), on the device."""
        t, values = t.to(self.ring.device), terms.detach().to(self.ring.device, torch.float64)
        same = t[:, None] == t[None, :]  # [B, B]
        before = torch.tril(same, diagonal=-1).sum(1)  # earlier entries of the same t in this batch
        after = same.sum(1) - before - 1  # later ones
        slot = torch.where(after < self.history, (self.counts[t] + before) % self.history, self.history)
        self.ring[t, slot] = values
        self.counts.index_add_(0, t, torch.ones_like(t))

    def state_dict(self) -> dict:
        return {"losses": self.losses.cpu().clone(), "counts": self.counts.cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        self.ring[:, :self.history].copy_(state["losses"])
        self.counts.copy_(state["counts"])


# ---------------------------------------------------------------------------------------------
# The process


class GaussianDiffusion:
    """The forward process q, the reverse process p given a network's output, the training losses,
    the ancestral and DDIM samplers, and the variational bound in bits/dim.

    ``alphas_cumprod`` and ``timestep_map`` build a respaced process (see ``respaced``): a subsequence
    of the trained timesteps, whose network calls still see the original t.

    The schedule is computed on the host in float64; ``to(device)`` copies the arrays a batch reads to the
    device once, and every gather reads that copy: a process built on one device is used on that device.
    """

    def __init__(self, config: DiffusionConfig, alphas_cumprod: torch.Tensor | None = None,
                 timestep_map: torch.Tensor | None = None):
        for key, valid in (("prediction", PREDICTIONS), ("variance", VARIANCES), ("t_sampling", T_SAMPLERS)):
            if getattr(config, key) not in valid:
                raise ValueError(f"unknown {key} {getattr(config, key)!r}; valid: {list(valid)}")
        self.config = config
        if alphas_cumprod is None:
            abar = torch.cumprod(1.0 - named_betas(config.schedule, config.timesteps), 0)
        else:
            abar = alphas_cumprod.double().cpu()
        self.num_timesteps = len(abar)
        self.timestep_map = torch.arange(self.num_timesteps) if timestep_map is None else timestep_map.long().cpu()
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        betas = 1.0 - abar / abar_prev
        alphas = 1.0 - betas
        # The schedule on the host, float64 [T] (the samplers' scalar arithmetic reads these) ...
        self.betas = betas
        self.alphas_cumprod = abar
        self.alphas_cumprod_prev = abar_prev
        self.sqrt_alphas_cumprod = abar.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1 - abar).sqrt()
        self.one_minus_alphas_cumprod = 1 - abar
        self.log_one_minus_alphas_cumprod = torch.log(1 - abar)
        self.sqrt_recip_alphas_cumprod = (1 / abar).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1 / abar - 1).sqrt()
        self.sqrt_alphas_cumprod_prev = abar_prev.sqrt()
        self.sqrt_one_minus_alphas_cumprod_prev = (1 - abar_prev).sqrt()
        self.sqrt_alphas = alphas.sqrt()  # one forward step x_{t-1} -> x_t
        self.sqrt_betas = betas.sqrt()
        # q(x_{t-1} | x_t, x_0) = N(coef1 * x_0 + coef2 * x_t, posterior_variance)
        self.posterior_variance = betas * (1 - abar_prev) / (1 - abar)
        # the variance at t = 0 is 0: use t = 1's value so the log stays finite (as improved-diffusion)
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )
        self.posterior_mean_coef1 = betas * abar_prev.sqrt() / (1 - abar)
        self.posterior_mean_coef2 = (1 - abar_prev) * alphas.sqrt() / (1 - abar)
        # fixed variances: beta_t (at t = 0 replaced by beta~_1, as improved-diffusion) or beta~_t (clipped)
        self.log_variance_large = torch.log(torch.cat([self.posterior_variance[1:2], betas[1:]]))
        self.log_variance_small = self.posterior_log_variance_clipped
        self.log_betas = torch.log(betas)  # the learned variance's upper end, beta_0 included
        self.full = timestep_map is None or torch.equal(self.timestep_map, torch.arange(self.num_timesteps))
        self.t_sampler = ImportanceSampler(self.num_timesteps) if config.t_sampling == "importance" else None
        # ... and its copy on the device the process runs on, made once by ``to`` (what _gather reads)
        self.device = torch.device("cpu")
        self.on_device = {name: getattr(self, name) for name in GATHERED}
        self._respaced: dict[int, GaussianDiffusion] = {}  # steps -> that respaced process, on this device

    @property
    def learned_variance(self) -> bool:
        return self.config.variance == "learned"

    def output_channels(self, channels: int) -> int:
        """Channels the network must output for images of ``channels`` channels."""
        return 2 * channels if self.learned_variance else channels

    def to(self, device: torch.device | str) -> GaussianDiffusion:
        """Put the process on ``device``: its schedule arrays (and the importance sampler's state) are copied
        there once, here, so that no call copies them again. In place; returns self."""
        self.device = torch.device(device)
        self.on_device = {name: getattr(self, name).to(self.device) for name in GATHERED}
        if self.t_sampler is not None:
            self.t_sampler.to(self.device)
        self._respaced = {}
        return self

    def respaced(self, steps: int) -> GaussianDiffusion:
        """The process on ``steps`` of the T timesteps (evenly spaced, always 0 and T-1), with betas
        recomputed from the kept abar values (Nichol & Dhariwal, section 4): for sampling in fewer
        steps, learned variances included. Made once per step count, on this process's device. The bound
        always uses the full process."""
        if steps >= self.num_timesteps:
            return self
        if steps not in self._respaced:
            kept = torch.tensor(sorted(self.ddim_timesteps(steps)))
            self._respaced[steps] = GaussianDiffusion(self.config, self.alphas_cumprod[kept],
                                                      self.timestep_map[kept]).to(self.device)
        return self._respaced[steps]

    def _gather(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Schedule array ``name`` (one of GATHERED, on this process's device) at timesteps t [B] (on that
        device) -> [B, 1, 1, 1] in like's dtype."""
        out = self.on_device[name][t].to(like.dtype)
        return out.view(-1, *([1] * (like.dim() - 1)))

    def call(self, net: Net, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The network at this process's timesteps t [B] (mapped to the trained ones)."""
        return net(x, self.on_device["timestep_map"][t], y)

    # forward process ---------------------------------------------------------------------

    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q(x_t | x_0). x0: [B, C, H, W], t: [B] -> mean [B, C, H, W], variance and log-variance [B, 1, 1, 1]."""
        mean = self._gather("sqrt_alphas_cumprod", t, x0) * x0
        return mean, self._gather("one_minus_alphas_cumprod", t, x0), self._gather("log_one_minus_alphas_cumprod", t, x0)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) with the given standard normal noise. x0, noise: [B, C, H, W], t: [B]."""
        return self._gather("sqrt_alphas_cumprod", t, x0) * x0 + self._gather(
            "sqrt_one_minus_alphas_cumprod", t, x0) * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
        """q(x_{t-1} | x_t, x_0): mean [B, C, H, W], variance and clipped log-variance [B, 1, 1, 1]."""
        mean = self._gather("posterior_mean_coef1", t, xt) * x0 + self._gather("posterior_mean_coef2", t, xt) * xt
        return mean, self._gather("posterior_variance", t, xt), self._gather("posterior_log_variance_clipped", t, xt)

    def q_step(self, x_prev: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """One forward step: x_t ~ q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t), with the given
        standard normal noise. x_prev: x_{t-1} (the data x_0 where t == 0); x_prev, noise: [B, C, H, W];
        t: [B] -> x_t [B, C, H, W]."""
        return self._gather("sqrt_alphas", t, x_prev) * x_prev + self._gather("sqrt_betas", t, x_prev) * noise

    def q_sample_pair(self, x0: torch.Tensor, t: torch.Tensor, noise_prev: torch.Tensor,
                      noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw (x_{t-1}, x_t) ~ q(x_{t-1}, x_t | x_0): x_{t-1} from its marginal (abar_{t-1}; x_0 itself where
        t == 0), then x_t by one forward step. x0, noise_prev, noise: [B, C, H, W]; t: [B] -> two [B, C, H, W]."""
        x_prev = self._gather("sqrt_alphas_cumprod_prev", t, x0) * x0 + self._gather(
            "sqrt_one_minus_alphas_cumprod_prev", t, x0) * noise_prev
        return x_prev, self.q_step(x_prev, t, noise)

    def q_posterior_sample(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                           noise: torch.Tensor) -> torch.Tensor:
        """Draw x_{t-1} ~ q(x_{t-1} | x_t, x_0) with the given standard normal noise (unused where t == 0,
        whose posterior is the point x_0). x0, xt, noise: [B, C, H, W]; t: [B] -> [B, C, H, W]."""
        mean, var, _ = self.q_posterior(x0, xt, t)
        return mean + var.sqrt() * noise  # the variance at t = 0 is exactly 0 (abar_prev = 1)

    # what the network predicts -----------------------------------------------------------

    def target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The training target of the configured prediction for x_t = q_sample(x0, t, noise):
        eps -> noise; x0 -> x0; v -> sqrt(abar_t) noise - sqrt(1 - abar_t) x0. All [B, C, H, W], t: [B]."""
        if self.config.prediction == "eps":
            return noise
        if self.config.prediction == "x0":
            return x0
        return self._gather("sqrt_alphas_cumprod", t, x0) * noise - self._gather("sqrt_one_minus_alphas_cumprod", t, x0) * x0

    def predict_x0(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_0 implied by x_t and an epsilon. All [B, C, H, W] but t: [B]."""
        return self._gather("sqrt_recip_alphas_cumprod", t, xt) * xt - self._gather("sqrt_recipm1_alphas_cumprod", t, xt) * eps

    def predict_eps(self, xt: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """epsilon implied by x_t and x_0. All [B, C, H, W] but t: [B]."""
        return (self._gather("sqrt_recip_alphas_cumprod", t, xt) * xt - x0) / self._gather("sqrt_recipm1_alphas_cumprod", t, xt)

    def split_output(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Network output [B, C or 2C, H, W] -> (prediction [B, C, H, W], variance channels or None)."""
        if self.learned_variance:
            return out.chunk(2, dim=1)
        return out, None

    def x0_from_prediction(self, pred: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_0 implied by the network's prediction (of the configured kind) at x_t. [B, C, H, W]; t: [B]."""
        if self.config.prediction == "eps":
            return self.predict_x0(xt, t, pred)
        if self.config.prediction == "x0":
            return pred
        return self._gather("sqrt_alphas_cumprod", t, xt) * xt - self._gather("sqrt_one_minus_alphas_cumprod", t, xt) * pred

    def model_log_variance(self, var_out: torch.Tensor | None, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """log of p's variance: fixed -> [B, 1, 1, 1]; learned -> [B, C, H, W] from the variance channels."""
        if self.config.variance == "fixed_large":
            return self._gather("log_variance_large", t, like)
        if self.config.variance == "fixed_small":
            return self._gather("log_variance_small", t, like)
        frac = (var_out + 1) / 2
        return frac * self._gather("log_betas", t, like) + (1 - frac) * self._gather("log_variance_small", t, like)

    def p_mean_variance(self, out: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, clip: bool | None = None):
        """p(x_{t-1} | x_t) from the network's raw output: mean [B, C, H, W], log-variance ([B, 1, 1, 1]
        or [B, C, H, W]) and the predicted x_0 (clipped to [-1, 1] when ``clip``, default the config's)."""
        pred, var_out = self.split_output(out)
        x0 = self.x0_from_prediction(pred, xt, t)
        if self.config.clip_denoised if clip is None else clip:
            x0 = x0.clamp(-1, 1)
        mean, _, _ = self.q_posterior(x0, xt, t)
        return mean, self.model_log_variance(var_out, t, xt), x0

    # training ----------------------------------------------------------------------------

    def draw_timesteps(self, batch: int, generator: torch.Generator | None, device) -> tuple[torch.Tensor, torch.Tensor]:
        """t [batch] for training and the loss weights [batch] (all 1 unless importance sampling)."""
        if self.t_sampler is not None:
            return self.t_sampler.sample(batch, generator, device)
        t = torch.randint(self.num_timesteps, (batch,), generator=generator, device=device)
        return t, torch.ones(batch, device=device)

    def training_losses(self, net: Net, x0: torch.Tensor, y: torch.Tensor, null_label: int,
                        generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The training objective, per sample. x0: [B, C, H, W] in [-1, 1]; y: [B] labels, each replaced by
        ``null_label`` with probability p_uncond (classifier-free guidance). Returns {"loss", "mse", "vb",
        "t"}, each [B]: mse is || target - prediction ||^2 averaged over pixels (L_simple); vb is the
        bound's term at t in bits per dimension, computed with the prediction detached, so only the
        variance channels learn from it; loss = (mse + vb_weight * T * vb) * weight for a learned
        variance (Nichol & Dhariwal's hybrid loss: T * vb estimates L_vb), mse * weight otherwise."""
        b = x0.shape[0]
        t, weights = self.draw_timesteps(b, generator, x0.device)  # every draw on the data's device
        noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        drop = torch.rand(b, generator=generator, device=x0.device) < self.config.p_uncond
        y = torch.where(drop, torch.full_like(y, null_label), y)
        xt = self.q_sample(x0, t, noise)
        out = net(xt, t, y).float()  # the losses in float32 whatever the network ran in (autocast)
        pred, var_out = self.split_output(out)
        mse = (pred - self.target(x0, t, noise)).pow(2).flatten(1).mean(1)
        loss = mse
        if self.learned_variance or self.t_sampler is not None:
            frozen = out.detach() if var_out is None else torch.cat([pred.detach(), var_out], dim=1)
            vb = self.vb_term_from_output(frozen, x0, xt, t, clip=False) / (x0[0].numel() * math.log(2.0))
            if self.learned_variance:
                loss = mse + self.config.vb_weight * self.num_timesteps * vb
            if self.t_sampler is not None:
                self.t_sampler.update(t, vb)
        else:
            vb = torch.full_like(mse, math.nan)
        return {"loss": loss * weights, "mse": mse, "vb": vb, "t": t}

    def training_loss(self, net: Net, x0: torch.Tensor, y: torch.Tensor, null_label: int,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """The per-sample training loss [B] (see training_losses)."""
        return self.training_losses(net, x0, y, null_label, generator)["loss"]

    # sampling ----------------------------------------------------------------------------

    def guided_output(self, net: Net, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, guidance: float,
                      null_label: int) -> torch.Tensor:
        """Classifier-free guidance on the prediction channels: uncond + w * (cond - uncond); variance
        channels, if any, from the conditional call (the unconditional one when w = 0).

        w = 0: unconditional; w = 1: conditional (one network call); w > 1: guided. The prediction is
        affine in eps for a fixed x_t, so guiding x0 or v predictions equals guiding their eps.
        x: [B, C, H, W], t: [B] (this process's timesteps), y: [B] -> the network's output shape.
        """
        if guidance == 1.0:
            return self.call(net, x, t, y)
        null = torch.full_like(y, null_label)
        if guidance == 0.0:
            return self.call(net, x, t, null)
        both = self.call(net, torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
        cond, uncond = both.chunk(2)
        pred_c, var_c = self.split_output(cond)
        pred_u, _ = self.split_output(uncond)
        guided = pred_u + guidance * (pred_c - pred_u)
        return guided if var_c is None else torch.cat([guided, var_c], dim=1)

    def ddim_timesteps(self, steps: int) -> list[int]:
        """``steps`` timesteps evenly spaced over 0..T-1, descending, always ending at 0."""
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"sampling steps must be in 1..{self.num_timesteps}, got {steps}")
        ts = torch.linspace(0, self.num_timesteps - 1, steps).round().long().unique().tolist()
        return sorted(ts, reverse=True)

    @torch.no_grad()
    def sample(self, net: Net, labels: torch.Tensor, seeds: torch.Tensor, shape: tuple[int, int, int], *,
               null_label: int, sampler: str = "ddim", steps: int | None = 50, eta: float = 0.0,
               guidance: float = 1.0) -> torch.Tensor:
        """Generate images. labels, seeds: [B] int64; shape: (C, H, W). Returns [B, C, H, W] in [-1, 1].

        Sample i depends only on (labels[i], seeds[i]) and the settings, not on the batch it is in.
        ``sampler``: "ddpm" (ancestral, with the model's variances, on ``steps`` respaced steps; None or
        T: all) or "ddim" (``steps`` steps, noise ``eta``: 0 deterministic, 1 the posterior's variance).
        """
        if sampler not in ("ddpm", "ddim"):
            raise ValueError(f"unknown sampler {sampler!r}; valid: ['ddim', 'ddpm']")
        proc = self.respaced(steps or self.num_timesteps)
        device = labels.device
        noise = NoiseStream(seeds, shape, device)
        x = noise.next()
        for i in reversed(range(proc.num_timesteps)):
            t = torch.full((len(labels),), i, dtype=torch.long, device=device)
            out = proc.guided_output(net, x, t, labels, guidance, null_label)
            z = noise.next()
            if sampler == "ddpm":
                mean, logvar, _ = proc.p_mean_variance(out, x, t)
                x = mean + (torch.exp(0.5 * logvar) * z if i > 0 else 0.0)
            else:
                _, _, x0 = proc.p_mean_variance(out, x, t)
                eps = proc.predict_eps(x, t, x0)
                abar = proc.alphas_cumprod[i].item()
                abar_prev = proc.alphas_cumprod_prev[i].item()
                sigma = eta * math.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
                x = math.sqrt(abar_prev) * x0 + math.sqrt(max(1 - abar_prev - sigma**2, 0.0)) * eps
                if sigma > 0 and i > 0:
                    x = x + sigma * z
        return x.clamp(-1, 1)

    # likelihood --------------------------------------------------------------------------

    def prior_kl(self, x0: torch.Tensor) -> torch.Tensor:
        """KL(q(x_T | x_0) || N(0, I)) summed over dimensions. x0: [B, C, H, W] -> [B] nats."""
        t = torch.full((x0.shape[0],), self.num_timesteps - 1, dtype=torch.long, device=x0.device)
        mean, _, logvar = self.q_mean_variance(x0, t)
        return normal_kl(mean, logvar, torch.zeros_like(mean), torch.zeros_like(logvar)).flatten(1).sum(1)

    def vb_term_from_output(self, out: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                            clip: bool | None = None) -> torch.Tensor:
        """One term of the bound given the network's output at x_t, summed over dimensions: the decoder's
        -log p(x_0 | x_1) (a Gaussian discretized to the 256 levels, open end bins) where t == 0,
        KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) elsewhere. out: the network's output at (xt, t);
        x0, xt: [B, C, H, W]; t: [B] -> [B] nats."""
        true_mean, _, true_logvar = self.q_posterior(x0, xt, t)
        mean, logvar, _ = self.p_mean_variance(out, xt, t, clip=clip)
        kl = normal_kl(true_mean, true_logvar, mean, logvar).flatten(1).sum(1)
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar.expand_as(mean)).flatten(1).sum(1)
        return torch.where(t == 0, nll, kl)

    def vb_term(self, net: Net, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """One term of the bound at timesteps t [B] (see vb_term_from_output), the network called on
        x_t = q_sample(x0, t, noise). x0, noise: [B, C, H, W]; y: [B] -> [B] nats."""
        xt = self.q_sample(x0, t, noise)
        return self.vb_term_from_output(self.call(net, xt, t, y), x0, xt, t)

    @torch.no_grad()
    def bits_per_dim(self, net: Net, x0: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor,
                     t_samples: int | None = None) -> dict[str, torch.Tensor]:
        """The variational bound on -log p(x_0 | y), per image, in bits per dimension.

        bound = KL(q(x_T|x_0) || p(x_T)) + sum_{t>=1} KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) - log p(x_0|x_1)

        x0: [B, C, H, W] real images on the 8-bit grid in [-1, 1]; y: [B] their labels; seeds: [B] per-image
        seeds for the noise. ``t_samples=None`` sums every term (T network calls); an integer K computes the
        prior and decoder terms exactly and estimates the sum of the T-1 KL terms by stratified Monte Carlo
        (K network calls, unbiased per image). Learned variances are used where the model has them.
        Returns per-image tensors [B]: "total", "prior", "decoder", "kl" (all bits/dim).
        """
        if not self.full:
            raise ValueError("the bound is defined on the full process, not a respaced one")
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
