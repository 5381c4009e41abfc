"""What the worker's training loop needs beside the method: the batches of an epoch, step statistics and
the divergence rules kept on the device (read on the host once per sync interval, not per step), the
collectives across DDP ranks (always on the worker's device: NCCL takes no CPU tensors), each rank's
noise state in a checkpoint, and where the training split lives.

Nothing here knows the method's family, and nothing imports Ray: the helpers take the rank, the world
size and the device, so that they are tested without Ray (tests/test_steps.py).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from condgen_bench.datasets.base import ImageSet
from condgen_bench.models.accel import free_memory
from condgen_bench.models.interface import Method


def steps_per_epoch(num_images: int, world: int, batch_size: int) -> int:
    """Batches each rank takes in one epoch of ``num_images`` (epoch_batches cuts the rest)."""
    return (num_images // world) // batch_size


def epoch_batches(num_images: int, epoch: int, rank: int, world: int, batch_size: int, seed: int,
                  device: torch.device | str = "cpu"):
    """This rank's batches of one epoch: a permutation shared by all ranks (seeded by seed and epoch, drawn
    on the CPU so that it is the same on any device), dealt round-robin, cut so that every rank takes the same
    number of steps. Yields index tensors [B] on ``device`` (copied there once per epoch)."""
    perm = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    shard = perm[rank::world]
    steps = steps_per_epoch(num_images, world, batch_size)
    if steps == 0:
        raise ValueError(f"{num_images} images cannot fill one batch of {batch_size} on each of {world} workers")
    shard = shard[:steps * batch_size].to(device)
    for i in range(steps):
        yield shard[i * batch_size:(i + 1) * batch_size]


def _as_tensor(value, device: torch.device) -> torch.Tensor:
    """A step statistic (0-dim tensor or float) as a 0-dim float64 tensor on ``device``: a float is filled in
    there (a kernel argument), not copied from the host."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(device=device, dtype=torch.float64)
    return torch.full((), float(value), dtype=torch.float64, device=device)


class StepStats:
    """Running sums of the statistics ``train_step`` returns, per key (a key may be absent on some steps):
    tensors summed on ``device`` and Python floats (a learning rate) on the host, so that adding a step
    makes no host sync and no copy."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.sums: dict[str, torch.Tensor | float] = {}
        self.counts: dict[str, int] = {}
        self.steps = 0

    def add(self, out: dict) -> None:
        self.steps += 1
        for key, value in out.items():
            if isinstance(value, torch.Tensor):
                value = _as_tensor(value, self.device)
            self.sums[key] = self.sums[key] + value if key in self.sums else value
            self.counts[key] = self.counts.get(key, 0) + 1

    def means(self, world: int = 1) -> dict[str, float]:
        """Per-key means over the steps that reported the key, averaged over the ``world`` ranks (one
        all-reduce on the device; every rank must call it and have the same keys): one host read."""
        keys = sorted(self.sums)
        if not keys:
            return {}
        means = torch.stack([_as_tensor(self.sums[k] / self.counts[k], self.device) for k in keys])
        if world > 1:
            dist.all_reduce(means)
            means = means / world
        return dict(zip(keys, means.tolist()))


class DivergenceWatch:
    """Tells when training has diverged: a non-finite "loss" or "loss_*" on a step, or the discriminator
    winning completely ("d_wins" = 1) on ``patience`` steps in a row (0: never by that rule).

    ``observe`` runs every step and only updates tensors on ``device``; ``verdict`` reads them (one host
    read, and on several ranks one all-reduce on the device) and names the first rule that fired."""

    def __init__(self, patience: int, device: torch.device | str = "cpu"):
        self.patience = patience
        self.device = torch.device(device)
        self.streak = torch.zeros((), device=self.device)  # steps in a row the discriminator won completely
        self.first_step: dict[str, torch.Tensor] = {}  # rule -> first step it fired at (-1: not yet)
        self.first_value: dict[str, torch.Tensor] = {}  # loss rules: the non-finite value seen then

    def _fire(self, rule: str, fired: torch.Tensor, step: int, value: torch.Tensor | None = None) -> None:
        first = self.first_step.get(rule, torch.full((), -1.0, dtype=torch.float64, device=self.device))
        new = fired & (first < 0)
        self.first_step[rule] = torch.where(new, torch.full_like(first, step), first)
        if value is not None:
            old = self.first_value.get(rule, torch.zeros((), dtype=torch.float64, device=self.device))
            self.first_value[rule] = torch.where(new, value, old)

    def observe(self, out: dict, step: int) -> None:
        """Take one step's statistics (0-dim tensors or floats); no host sync."""
        for key, value in out.items():
            if key == "loss" or key.startswith("loss_"):
                value = _as_tensor(value, self.device)
                self._fire(key, ~torch.isfinite(value), step, value)
        if self.patience and "d_wins" in out:
            self.streak = (self.streak + 1) * _as_tensor(out["d_wins"], self.device).float()
            self._fire("d_wins", self.streak >= self.patience, step)

    def verdict(self, world: int = 1) -> str | None:
        """The reason training has diverged so far on this rank, "another worker diverged" if only another
        rank has one, else None. On several ranks every rank must call it at the same step (collective)."""
        rules = sorted(self.first_step)
        steps = torch.stack([self.first_step[r] for r in rules]) if rules else torch.zeros(0, device=self.device)
        local = (steps >= 0).any().to(torch.float64).reshape(1)
        if world > 1:
            anywhere = local.clone()
            dist.all_reduce(anywhere, op=dist.ReduceOp.MAX)
        else:
            anywhere = local
        values = torch.stack([self.first_value.get(r, torch.zeros((), dtype=torch.float64, device=self.device))
                              for r in rules]) if rules else torch.zeros(0, device=self.device)
        read = torch.cat([anywhere, local, steps.double(), values.double()]).tolist()  # the one host read
        anywhere, local = read[0] > 0, read[1] > 0
        if not anywhere:
            return None
        if not local:
            return "another worker diverged"
        firsts = dict(zip(rules, read[2:2 + len(rules)]))
        values = dict(zip(rules, read[2 + len(rules):]))
        rule = min((r for r in rules if firsts[r] >= 0), key=lambda r: (firsts[r], r))
        step = int(firsts[rule])
        if rule == "d_wins":
            return f"the discriminator won completely on {self.patience} steps in a row (to step {step})"
        return f"{rule} became {values[rule]} at step {step}"


def gather_noise_states(state: torch.Tensor, world: int, device: torch.device | str) -> list[torch.Tensor]:
    """Every rank's training-noise state (``method.noise_state()``, a CPU uint8 tensor), gathered on the
    device and returned as CPU tensors in rank order: what a checkpoint keeps so that each rank resumes its
    own stream. Every rank must call it (collective)."""
    if world == 1:
        return [state.cpu()]
    local = state.to(device)
    gathered = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(gathered, local)
    return [t.cpu() for t in gathered]


def noise_seed(seed: int, rank: int) -> int:
    """The training-noise seed of a rank at a fresh start (each rank its own stream)."""
    return seed * 1000 + rank + 1


def restore_noise(method: Method, saved: list[torch.Tensor] | None, rank: int, world: int, seed: int, epoch: int,
                  saved_kind: str | None = None) -> str:
    """Continue this rank's noise stream from a checkpoint's ``saved`` states (one per rank), written on a
    ``saved_kind`` device ("cpu", "cuda"; None for a checkpoint that did not record it: its states' format then
    tells). A checkpoint without states, from a different number of ranks, or from another type of device
    (a generator's state has its device type's format) cannot continue the streams: each rank then starts
    a fresh one seeded by (seed, rank, epoch). Returns what was done, for the log."""
    kind = method.noise_kind()
    if saved is not None and len(saved) == world and saved_kind in (None, kind) and method.load_noise_state(saved[rank]):
        return "continued this rank's noise stream"
    method.seed_noise(noise_seed(seed, rank) + 7919 * epoch)
    if saved is None:
        found = f"no per-rank noise states for {world}"
    elif len(saved) != world:
        found = f"noise states of {len(saved)} ranks for {world}"
    else:
        found = f"noise states drawn on a {saved_kind or 'another type of'} device, and this worker draws on a {kind} device"
    return f"the checkpoint has {found}: fresh noise streams seeded by (seed, rank, epoch {epoch})"


def training_tensors(split: ImageSet, device: torch.device | str, fraction: float) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(images [N, C, H, W] uint8, labels [N] int64, where) of the training split: moved to an accelerator
    once when they take at most ``fraction`` of its free memory (batches are then indexed there), else left
    in host memory (always so on a CPU, whose device is the host). ``where`` says which, for the log."""
    free = free_memory(device)
    if free is None:
        return split.images, split.labels, "host memory"
    size = split.images.nbytes + split.labels.nbytes
    if size > fraction * free:
        return (split.images, split.labels,
                f"host memory ({size / 2**20:.0f} MiB > {fraction:g} of the device's free {free / 2**20:.0f} MiB)")
    return split.images.to(device), split.labels.to(device), f"{device} ({size / 2**20:.0f} MiB, once)"
