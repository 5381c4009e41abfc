"""Seeded noise shared by every family: ``NoiseStream`` (per-sample streams for sampling, so sample i is the
same whatever its batch) and ``TrainingNoise`` (a method's training generator, one stream per rank that
checkpoints carry)."""

from __future__ import annotations

import torch

from condgen_bench.models.accel import training_generator


class NoiseStream:
    """Standard normal noise where sample i's draws depend only on ``seeds[i]``.

    Each call to ``next()`` returns the next [B, *shape] tensor (or of another shape given to it); sample
    i's k-th draw is the same whatever the batch it sits in, so sampling is independent of batch size
    and worker count.
    """

    def __init__(self, seeds: torch.Tensor, shape: tuple[int, ...], device: torch.device | str = "cpu"):
        self.generators = []
        for s in seeds.tolist():
            g = torch.Generator()
            g.manual_seed(int(s))
            self.generators.append(g)
        self.shape = tuple(shape)
        self.device = device

    def next(self, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """The next draw, [B, *shape] (default: the stream's shape)."""
        shape = self.shape if shape is None else tuple(shape)
        return torch.stack([torch.randn(shape, generator=g) for g in self.generators]).to(self.device)

    def randint(self, high: int) -> torch.Tensor:
        """One integer in [0, high) per sample -> [B] int64."""
        return torch.cat([torch.randint(high, (1,), generator=g) for g in self.generators]).to(self.device)


class TrainingNoise:
    """A method's seeded training noise: ``self.generator``, the generator every random draw of a training
    step uses, made for the method's device by models/accel.py's training_generator (one stream per rank:
    the harness seeds each rank its own).

    A generator's state has its device type's format (a CPU's is 5,056 bytes, a CUDA device's 16), so a
    state saved on one type of device cannot continue a stream on another: ``load_noise_state`` then leaves
    the generator as it is and says so, and the harness reseeds the stream (harness/steps.py restore_noise)."""

    generator: torch.Generator

    def place_noise(self, device: torch.device | str, seed: int) -> None:
        """A fresh training generator for ``device``, seeded with ``seed``."""
        self.generator = training_generator(device, seed)

    def seed_noise(self, seed: int) -> None:
        """Seed the training noise (the harness gives each rank its own seed)."""
        self.generator.manual_seed(seed)

    def noise_state(self) -> torch.Tensor:
        """The training noise generator's state: a CPU uint8 tensor (whatever the generator's device)."""
        return self.generator.get_state()

    def noise_kind(self) -> str:
        """The type of device whose generator format ``noise_state`` has ("cpu", "cuda")."""
        return self.generator.device.type

    def load_noise_state(self, state: torch.Tensor) -> bool:
        """Continue the training noise from a ``noise_state()``, wherever the checkpoint was loaded to. Returns
        False, leaving the generator as it is, when ``state`` is another device type's (it cannot be set here)."""
        if state.numel() != self.generator.get_state().numel():
            return False
        self.generator.set_state(state.cpu())
        return True
