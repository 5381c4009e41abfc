"""Training FLOPs per image, counted, not estimated: torch's FlopCounterMode around real training steps of a
copy of the method on the ``meta`` device (shapes only: no memory, no arithmetic), so that every forward and
backward pass a step runs is counted as it runs, whatever the family (DDPM: the UNet; a GAN: the generator
and the discriminator on their batches, DDGAN's R1 double backward on the steps that take it).

The same counter serves the worker's achieved TFLOP/s (harness/worker.py) and benchmarks/ddpm_costs.py.
It applies torch's own per-operator formulas (torch.utils.flop_counter's registry: matrix products,
convolutions, attention; the work that dominates, the elementwise rest left out as in the usual model-FLOPs
figures), without FlopCounterMode's module tracking, whose hooks do not support the double backward of an
R1 penalty.
"""

from __future__ import annotations

import math

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from condgen_bench.datasets.base import DatasetSpec


class FlopCounter(TorchDispatchMode):
    """Counts the FLOPs of the operators run inside it (``flops``), by torch's formulas; an operator without
    one is decomposed where it can be (as FlopCounterMode does), so that composites are counted by their parts."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func._overloadpacket
        if packet not in flop_registry:
            try:
                with self:
                    out = func.decompose(*args, **kwargs)
            except RuntimeError:  # no decomposition to run (prim::device, which fake CUDA tensors dispatch)
                out = NotImplemented
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        if packet in flop_registry:
            self.flops += flop_registry[packet](*args, **kwargs, out_val=out)
        return out


def step_cycle(config) -> int:
    """Training steps after which a family's step pattern repeats: a GAN's n_critic discriminator updates per
    generator update, times DDGAN's lazy-R1 interval (its penalty runs every r1_every-th step); 1 for a step
    that is always alike."""
    n_critic = getattr(config, "n_critic", 1)
    r1_every = getattr(config, "r1_every", 1) if getattr(config, "r1_gamma", 0) else 1
    return n_critic * r1_every // math.gcd(n_critic, r1_every)


def training_flops_per_image(name: str, config, spec: DatasetSpec, batch_size: int, max_steps: int = 30) -> float:
    """FLOPs of training per image for method ``name`` with ``config`` on ``spec``'s images at ``batch_size``:
    the mean over one step_cycle (at most ``max_steps``) of a meta-device copy's counted FLOPs per step,
    divided by the batch. Nothing is allocated or computed."""
    from condgen_bench.models import build_method  # the registry imports every family, which imports this module

    method = build_method(name, config, spec, device="meta", seed=0)
    images = torch.zeros(batch_size, spec.channels, spec.image_size, spec.image_size, dtype=torch.uint8,
                         device="meta")
    labels = torch.zeros(batch_size, dtype=torch.long, device="meta")
    steps = min(step_cycle(config), max_steps)
    with FlopCounter() as counter:
        for _ in range(steps):
            method.train_step(images, labels)
    return counter.flops / steps / batch_size


_SAMPLING_FLOPS: dict[tuple, float] = {}  # (family, config, settings, device) -> FLOPs per image, per process


def sampling_flops_per_image(method, settings: dict) -> float:
    """FLOPs of generating one image with ``method`` (models/interface.py Method) under its sampler
    ``settings``: one image (class 0, seed 0) sampled for real with the counter on, every network call of
    the sampler counted as it runs (guidance's two passes, a DDGAN's few steps). It depends on the network
    and the setting, not the weights, so it is counted once per family config and setting in a process.
    The scored samples are drawn apart from it (a sample is a function of its seed alone)."""
    key = (method.name, repr(getattr(method, "config", None)), repr(sorted(method.sampling_settings(**settings).items())),
           str(getattr(method, "device", "")))
    if key not in _SAMPLING_FLOPS:
        with FlopCounter() as counter:
            method.sample(torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long), batch_size=1, **settings)
        _SAMPLING_FLOPS[key] = float(counter.flops)
    return _SAMPLING_FLOPS[key]
