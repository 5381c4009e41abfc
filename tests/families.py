"""Every registered family, built tiny from its registered config (models/__init__.py, ``MethodEntry.tiny``).
The family-wide tests take their lists from here, so a family registered there is tested with no change
here or in them."""

import dataclasses

from condgen_bench.datasets import FER_EMOTIONS, DatasetSpec
from condgen_bench.models import METHODS, build_method, get_method
from condgen_bench.models.gan import GANMethod

FAMILIES = sorted(METHODS)
GAN_FAMILIES = sorted(name for name, entry in METHODS.items() if issubclass(entry.cls, GANMethod))
LIKELIHOOD_FAMILIES = sorted(name for name, entry in METHODS.items() if entry.cls.has_likelihood)
CLASSES = FER_EMOTIONS[:3]


def tiny_config(family: str, **overrides):
    """The family's registered tiny config, with ``overrides`` (config field: value)."""
    return dataclasses.replace(get_method(family).tiny(), **overrides)


def tiny_method(family: str, size: int | None = None, channels: int = 1, seed: int = 0, device: str = "cpu",
                accel=None, wrap=None, **overrides):
    """A tiny method of ``family`` for 3 classes of ``channels`` x ``size`` px images (default: the family's
    smallest comfortable size), built on the CPU and put on ``device``; and that size."""
    size = size or get_method(family).tiny_image_size
    spec = DatasetSpec("toy", channels, size, CLASSES, "fp")
    return build_method(family, tiny_config(family, **overrides), spec, device=device, seed=seed, accel=accel,
                        wrap=wrap), size
