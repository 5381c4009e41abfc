"""Datasets by name. ``load(DataConfig(name=...))`` returns a DatasetSplits (see datasets/base.py).

Every loader gives uint8 images [N, C, H, W] in memory, int64 labels [N], class names, the split
and a fingerprint. The face datasets share FER2013's emotion names, so tables line up across them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from condgen_bench.datasets.base import (FER_EMOTIONS, DatasetError, DatasetSplits, DatasetSpec, ImageSet, float_to_uint8,
                           uint8_to_float)
from condgen_bench.datasets.ckplus import load_ckplus
from condgen_bench.datasets.fer2013 import load_fer2013
from condgen_bench.datasets.imagefolder import load_imagefolder
from condgen_bench.datasets.synthetic_faces import load_synthetic_faces


@dataclass
class DataConfig:
    name: str = "synthetic_faces"  # registry name (see DATASETS)
    data_root: str | None = None  # fer2013 / ckplus / imagefolder: the file or folder of the data (docs/datasets.md)
    image_size: int = 48  # output height and width in px (resized with antialiased bicubic when different)
    channels: int | None = None  # 1 gray or 3 RGB; None: the dataset's own (1 for the faces, 3 for imagefolder)
    classes: list[str] | None = None  # keep only these classes, by name (e.g. ["neutral", "fear"]); None: all
    crop: str = "center"  # imagefolder: "center" crops to a centred square before resizing; "none" squashes
    test_fraction: float = 0.2  # ckplus / imagefolder without test/: share of each class held out for test
    shots_per_class: int | None = None  # keep this many training images a class (seeded); test stays whole
    num_train: int = 7000  # synthetic_faces: training images (a multiple of 7: one identity per 7)
    num_test: int = 1400  # synthetic_faces: test images, identities disjoint from training
    # synthetic_faces: validation images (identities of their own; the sweep's decisions use them, never
    # the test split's); None: as many as num_test
    num_validation: int | None = None
    # the other datasets, where the data has no validation split (FER2013's CSV has PublicTest; an image
    # folder may have val/): this share of each class's training images held out for it (CK+: by subject)
    validation_fraction: float = 0.1
    seed: int = 0  # generation, split and few-shot seed

    def __post_init__(self):
        if self.name not in DATASETS:
            raise ValueError(f"unknown dataset {self.name!r}; valid: {sorted(DATASETS)}")
        if self.crop not in ("center", "none"):
            raise ValueError(f"unknown crop {self.crop!r}; valid: ['center', 'none']")
        if self.channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")


def _root(config: DataConfig) -> str:
    if not config.data_root:
        raise DatasetError(f"dataset {config.name!r} needs a data root (--data-root PATH); see docs/datasets.md")
    return config.data_root


def _synthetic(config: DataConfig) -> DatasetSplits:
    if config.channels not in (None, 1):
        raise DatasetError("synthetic_faces is grayscale: channels must be 1")
    return load_synthetic_faces(image_size=config.image_size, num_train=config.num_train, num_test=config.num_test,
                                seed=config.seed, classes=config.classes, shots_per_class=config.shots_per_class,
                                num_validation=config.num_validation)


def _fer2013(config: DataConfig) -> DatasetSplits:
    return load_fer2013(_root(config), image_size=config.image_size, channels=config.channels or 1,
                        classes=config.classes, shots_per_class=config.shots_per_class, seed=config.seed,
                        validation_fraction=config.validation_fraction)


def _ckplus(config: DataConfig) -> DatasetSplits:
    return load_ckplus(_root(config), image_size=config.image_size, channels=config.channels or 1,
                       classes=config.classes, test_fraction=config.test_fraction,
                       shots_per_class=config.shots_per_class, seed=config.seed,
                       validation_fraction=config.validation_fraction)


def _imagefolder(config: DataConfig) -> DatasetSplits:
    return load_imagefolder(_root(config), image_size=config.image_size, channels=config.channels or 3,
                            crop=config.crop, classes=config.classes, test_fraction=config.test_fraction,
                            shots_per_class=config.shots_per_class, seed=config.seed,
                            validation_fraction=config.validation_fraction)


DATASETS: dict[str, Callable[[DataConfig], DatasetSplits]] = {
    "synthetic_faces": _synthetic,
    "fer2013": _fer2013,
    "ckplus": _ckplus,
    "imagefolder": _imagefolder,
}


def load(config: DataConfig) -> DatasetSplits:
    """Load the dataset that ``config.name`` names. Bad input raises DatasetError naming the file."""
    if config.name not in DATASETS:
        raise ValueError(f"unknown dataset {config.name!r}; valid: {sorted(DATASETS)}")
    return DATASETS[config.name](config)


__all__ = ["DATASETS", "DataConfig", "DatasetError", "DatasetSplits", "DatasetSpec", "FER_EMOTIONS", "ImageSet",
           "load", "float_to_uint8", "uint8_to_float"]
