"""The one shape every loader returns: uint8 images in memory, labels, class names, split, fingerprint."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch

# The seven FER2013 emotions in FER2013's label order (0..6); every emotion dataset uses these names.
FER_EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@dataclass(frozen=True)
class ImageSet:
    """One split of a dataset.

    images: [N, C, H, W] uint8; labels: [N] int64 in [0, len(class_names)).
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    split: str  # "train" or "test"

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must be int64 [N], got {self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def counts(self) -> dict[str, int]:
        """Images per class name."""
        counts = torch.bincount(self.labels, minlength=len(self.class_names)).tolist()
        return dict(zip(self.class_names, counts))


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset's train and test splits, as a loader returns them.

    ``fingerprint`` changes when the pixels, the labels, the split or the preprocessing change; caches
    (the evaluation classifier, real-data feature statistics) are keyed by it.
    """

    name: str
    train: ImageSet
    test: ImageSet
    fingerprint: str
    options: dict  # the loader options that produced it (recorded with results)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.train.class_names

    @property
    def num_classes(self) -> int:
        return len(self.train.class_names)

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[2]

    def spec(self) -> "DatasetSpec":
        return DatasetSpec(self.name, self.channels, self.image_size, self.class_names, self.fingerprint)

    def summary(self) -> dict[str, dict[str, int]]:
        """Counts per class per split: {split: {class: count}}."""
        return {"train": self.train.counts(), "test": self.test.counts()}


@dataclass(frozen=True)
class DatasetSpec:
    """What a model needs to know about a dataset (channels, size, classes come from here, never a constant)."""

    name: str
    channels: int
    image_size: int
    class_names: tuple[str, ...]
    fingerprint: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def uint8_to_float(images: torch.Tensor) -> torch.Tensor:
    """[..] uint8 in 0..255 -> float32 in [-1, 1] (the 8-bit grid used by the likelihood)."""
    return images.float() / 127.5 - 1.0


def float_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[..] float in [-1, 1] -> uint8 (rounded, clipped)."""
    return ((images.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


def fingerprint(*, name: str, options: dict, splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
                class_names: tuple[str, ...]) -> str:
    """sha256 over the options, the class names and every split's pixels and labels -> 16 hex chars."""
    h = hashlib.sha256()
    h.update(json.dumps({"name": name, "options": options, "classes": list(class_names)}, sort_keys=True,
                        default=str).encode())
    for split in sorted(splits):
        images, labels = splits[split]
        h.update(split.encode())
        h.update(images.contiguous().numpy().tobytes())
        h.update(labels.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
