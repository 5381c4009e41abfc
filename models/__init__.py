"""Generative methods by name.

Every method offers the harness the same interface:
    Method(config, spec, device, wrap, seed, accel)  build (spec: datasets.DatasetSpec; accel:
                                                 models.accel.Acceleration, precision / channels-last / compile)
    method.train_step(images, labels) -> dict    one update; images [B, C, H, W] uint8, labels [B]; returns
                                                 0-dim tensors on the device (no host sync) or floats:
                                                 "loss" and any "loss_*" must stay finite, "d_wins" (GANs)
                                                 is 1 on a step the discriminator wins completely
    method.sample(labels, seeds, **settings)     -> [N, C, H, W] uint8, image i a function of (labels[i], seeds[i])
    method.sampling_settings(**settings) -> dict the settings a sample call uses (recorded with results)
    method.network_evaluations(**settings) -> int network calls per generated image
    method.bits_per_dim(images, labels, seeds)   per-image bound, only where has_likelihood is True
                                                 (GANs: has_likelihood False, no bits_per_dim)
    method.state_dict() / load_state_dict()      everything needed to resume (random-number states on the CPU)
    method.noise_state() / load_noise_state(s)   this rank's training-noise generator state (a CPU uint8 tensor)
"""

from __future__ import annotations

from dataclasses import dataclass

from condgen_bench.models.dcgan import DCGANConfig, DCGANMethod
from condgen_bench.models.ddgan import DDGANConfig, DDGANMethod
from condgen_bench.models.ddpm import DDPMConfig, DDPMMethod
from condgen_bench.models.fastgan import FastGANConfig, FastGANMethod
from condgen_bench.models.registry import lookup


@dataclass(frozen=True)
class MethodEntry:
    config_cls: type  # the method's config dataclass
    cls: type  # the method class


METHODS: dict[str, MethodEntry] = {
    "ddpm": MethodEntry(DDPMConfig, DDPMMethod),
    "dcgan": MethodEntry(DCGANConfig, DCGANMethod),
    "fastgan": MethodEntry(FastGANConfig, FastGANMethod),
    "ddgan": MethodEntry(DDGANConfig, DDGANMethod),
}


def get_method(name: str) -> MethodEntry:
    return lookup(METHODS, name, "method")


def build_method(name: str, config, spec, device="cpu", wrap=None, seed: int = 0, accel=None):
    """Instantiate method ``name`` with its config dataclass instance (accel: models.accel.Acceleration,
    None: fp32, contiguous, not compiled)."""
    return get_method(name).cls(config, spec, device=device, wrap=wrap, seed=seed, accel=accel)


__all__ = ["METHODS", "MethodEntry", "build_method", "get_method"]
