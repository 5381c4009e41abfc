"""Datasets by name. ``load(DataConfig(name=...))`` returns a DatasetSplits (see datasets/base.py).

Every loader gives uint8 images [N, C, H, W] in memory, int64 labels [N], class names, the split
and a fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from datasets.base import FER_EMOTIONS, DatasetSplits, DatasetSpec, ImageSet, float_to_uint8, uint8_to_float
from datasets.synthetic_faces import load_synthetic_faces


@dataclass
class DataConfig:
    name: str = "synthetic_faces"  # registry name (see DATASETS)
    image_size: int = 48  # output height and width in px
    num_train: int = 7000  # synthetic_faces: training images (a multiple of 7: one identity per 7)
    num_test: int = 1400  # synthetic_faces: test images, identities disjoint from training
    seed: int = 0  # generation and split seed


def _synthetic(config: DataConfig) -> DatasetSplits:
    return load_synthetic_faces(image_size=config.image_size, num_train=config.num_train,
                                num_test=config.num_test, seed=config.seed)


DATASETS: dict[str, Callable[[DataConfig], DatasetSplits]] = {
    "synthetic_faces": _synthetic,
}


def load(config: DataConfig) -> DatasetSplits:
    """Load the dataset that ``config.name`` names."""
    if config.name not in DATASETS:
        raise ValueError(f"unknown dataset {config.name!r}; valid: {sorted(DATASETS)}")
    return DATASETS[config.name](config)


__all__ = ["DATASETS", "DataConfig", "DatasetSplits", "DatasetSpec", "FER_EMOTIONS", "ImageSet", "load",
           "float_to_uint8", "uint8_to_float"]
