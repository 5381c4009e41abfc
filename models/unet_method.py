"""What the families that train one conditional UNet share (DDPM, flow matching): building the network,
its EMA copy and AdamW; the warmed-up learning rate; the update after a loss; resuming. A family adds its
objective (train_step), sampler and likelihood."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from condgen_bench.datasets.base import DatasetSpec
from condgen_bench.models.accel import Acceleration, Accelerator
from condgen_bench.models.ema import EMA
from condgen_bench.models.interface import CheckedSampling
from condgen_bench.models.noise import TrainingNoise
from condgen_bench.models.schedule import lr_factor
from condgen_bench.models.unet import UNet


class UNetMethod(TrainingNoise, CheckedSampling):
    """A UNet from (spec.channels) to ``out_channels`` channels, conditioned on the class (label
    spec.num_classes is the null class of classifier-free guidance), trained by AdamW with a linear
    warm-up, with an EMA copy for sampling and likelihoods.

    The config needs ``unet``, ``lr``, ``lr_schedule``, ``weight_decay``, ``warmup_steps``, ``grad_clip`` and
    ``ema_decay``.
    ``wrap`` is applied to the trained network (Ray Train's ``prepare_model``: the device, DDP); the EMA
    copy is never wrapped. ``accel`` sets the training step's precision, memory format and compilation
    (models/accel.py); sampling and likelihoods run in float32 with the EMA weights."""

    def __init__(self, config, spec: DatasetSpec, out_channels: int, device: torch.device | str = "cpu",
                 wrap: Callable[[nn.Module], nn.Module] | None = None, seed: int = 0,
                 accel: Acceleration | None = None):
        self.config = config
        self.spec = spec
        self.accel = accel
        self.wrap = wrap
        self.seed = seed
        torch.manual_seed(seed)  # the same initial weights on every rank, whatever the device
        self.net = UNet(spec.channels, out_channels, spec.num_classes, spec.image_size, config.unet)
        self.step = 0
        self.total_steps: int | None = None  # set_training_length
        self.null_label = spec.num_classes
        self.to(device)

    def to(self, device: torch.device | str) -> "UNetMethod":
        """Put the method on ``device`` before it trains: the network and its EMA copy (and a family's own
        tensors, ``place``) move there; ``wrap``, compilation, the optimizer, the loss scaler and the training
        noise (seeded with the method's seed) are made for it. Built on the CPU, every method is put on its
        device this way. Returns self."""
        self.device = torch.device(device)
        self.acc = Accelerator(self.accel, self.device)
        self.net = self.acc.prepare(self.net.to(self.device))
        self.ema = EMA(self.net, self.config.ema_decay)
        self.place(self.device)
        self.train_net = self.acc.maybe_compile(self.wrap(self.net) if self.wrap else self.net)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)
        self.scaler = self.acc.scaler()
        self.place_noise(self.device, self.seed)
        return self

    def place(self, device: torch.device) -> None:
        """Move a family's own tensors (a diffusion's schedule) to ``device``; nothing by default."""

    def set_training_length(self, total_steps: int) -> None:
        """The trial's number of train_step calls (its epoch budget), where the cosine schedule ends."""
        self.total_steps = total_steps

    def warm_up(self) -> float:
        """Set and return this step's learning rate: the peak lr ramped linearly over warmup_steps, then
        kept (lr_schedule "constant") or decayed to 0 at the trial's last step ("cosine"; models/schedule.py)."""
        lr = self.config.lr * lr_factor(self.config.lr_schedule, self.step, self.config.warmup_steps, self.total_steps)
        for group in self.opt.param_groups:
            group["lr"] = lr
        return lr

    def update(self, loss: torch.Tensor) -> torch.Tensor:
        """Step on ``loss`` (0-dim; through the precision's scaler, with the gradient clipped), then the EMA.
        Returns the gradient norm, a 0-dim tensor on the device."""
        grad_norm = self.acc.step(loss, self.opt, self.scaler, self.net.parameters(), self.config.grad_clip)
        self.ema.update(self.net)
        self.step += 1
        return grad_norm

    def extra_state(self) -> dict:
        """A family's own state to resume (beside the network, EMA, optimizer, step and noise)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what extra_state saved (``state``: the whole checkpoint dict)."""

    def state_dict(self) -> dict:
        """Everything needed to resume; random-number states as CPU tensors."""
        state = {"net": self.net.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                 "step": self.step, "generator": self.noise_state()}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return {**state, **self.extra_state()}

    def load_state_dict(self, state: dict) -> None:
        """Resume from ``state_dict()`` output, onto this method's device (a noise state of another device
        type is left out: the harness reseeds the stream, see models/noise.py)."""
        self.net.load_state_dict(state["net"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.step = state["step"]
        self.load_noise_state(state["generator"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.load_extra_state(state)
