"""Generative methods by name: each family's config dataclass and method class (the interface every
method offers the harness: models/interface.py, ``Method``)."""

from __future__ import annotations

from dataclasses import dataclass

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


METHODS: dict[str, MethodEntry] = {
    "ddpm": MethodEntry(DDPMConfig, DDPMMethod),
    "dcgan": MethodEntry(DCGANConfig, DCGANMethod),
    "fastgan": MethodEntry(FastGANConfig, FastGANMethod),
    "ddgan": MethodEntry(DDGANConfig, DDGANMethod),
    "flow": MethodEntry(FlowConfig, FlowMethod),
}


def get_method(name: str) -> MethodEntry:
    return lookup(METHODS, name, "method")


def build_method(name: str, config, spec, device="cpu", wrap=None, seed: int = 0, accel=None) -> Method:
    """Instantiate method ``name`` with its config dataclass instance (accel: models.accel.Acceleration,
    None: fp32, contiguous, not compiled)."""
    return get_method(name).cls(config, spec, device=device, wrap=wrap, seed=seed, accel=accel)


__all__ = ["METHODS", "LikelihoodMethod", "Method", "MethodEntry", "build_method", "get_method"]
