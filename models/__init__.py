"""Generative methods by name: each family's config dataclass and method class (the interface every
method offers the harness: models/interface.py, ``Method``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from condgen_bench.models import dcgan, ddgan, ddpm, fastgan, flow
from condgen_bench.models.dcgan import DCGANConfig, DCGANMethod
from condgen_bench.models.ddgan import DDGANConfig, DDGANMethod
from condgen_bench.models.ddpm import DDPMConfig, DDPMMethod
from condgen_bench.models.fastgan import FastGANConfig, FastGANMethod
from condgen_bench.models.flow import FlowConfig, FlowMethod
from condgen_bench.models.interface import LikelihoodMethod, Method
from condgen_bench.models.registry import lookup


@dataclass(frozen=True)
class MethodEntry:
    config_cls: type  # the method's config dataclass
    cls: type  # the method class
    # a fresh config of the family with tiny networks (a few thousand weights): the tests build every
    # registered family from it, so a family registered here is checked by every family-wide test
    tiny: Callable[[], Any]
    tiny_image_size: int  # px: the smallest images its tiny networks take comfortably


METHODS: dict[str, MethodEntry] = {
    "ddpm": MethodEntry(DDPMConfig, DDPMMethod, ddpm.tiny_config, 8),
    "dcgan": MethodEntry(DCGANConfig, DCGANMethod, dcgan.tiny_config, 12),
    "fastgan": MethodEntry(FastGANConfig, FastGANMethod, fastgan.tiny_config, 12),
    "ddgan": MethodEntry(DDGANConfig, DDGANMethod, ddgan.tiny_config, 12),
    "flow": MethodEntry(FlowConfig, FlowMethod, flow.tiny_config, 8),
}


def get_method(name: str) -> MethodEntry:
    return lookup(METHODS, name, "method")


def build_method(name: str, config, spec, device="cpu", wrap=None, seed: int = 0, accel=None) -> Method:
    """Instantiate method ``name`` with its config dataclass instance (accel: models.accel.Acceleration,
    None: fp32, contiguous, not compiled)."""
    return get_method(name).cls(config, spec, device=device, wrap=wrap, seed=seed, accel=accel)


__all__ = ["METHODS", "LikelihoodMethod", "Method", "MethodEntry", "build_method", "get_method"]
