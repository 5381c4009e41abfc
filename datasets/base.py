"""The one shape every loader returns: uint8 images in memory, labels, class names, split, fingerprint."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# The seven FER2013 emotions in FER2013's label order (0..6); every emotion dataset uses these names.
FER_EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


class DatasetError(ValueError):
    """Bad input data: the message names the file (and the line, for CSV) and what is wrong."""


@dataclass(frozen=True)
class ImageSet:
    """One split of a dataset.

    images: [N, C, H, W] uint8; labels: [N] int64 in [0, len(class_names)).
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    split: str  # "train", "train_full" (few-shot runs: the whole training split), "validation" or "test"

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
    validation: ImageSet | None = None  # a held-out split where the dataset defines one (FER2013's PublicTest)
    # few-shot runs: the whole training split the K shots were taken from. Only the evaluation classifier
    # learns from it (it judges the samples; the generators see ``train`` alone)
    train_full: ImageSet | None = None

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

    @property
    def classifier_train(self) -> ImageSet:
        """What the evaluation classifier trains on: the whole training split, few-shot or not."""
        return self.train_full if self.train_full is not None else self.train

    def reference_set(self, split: str) -> tuple[ImageSet, str]:
        """The real images an evaluation on ``split`` ("validation" or "test") compares with, and the split's
        name as recorded: a dataset built without a validation split (by hand; every loader makes one) falls
        back to its test split, saying so."""
        if split == "validation" and self.validation is None:
            return self.test, "test (the dataset has no validation split)"
        return (self.validation if split == "validation" else self.test), split

    def splits(self) -> dict[str, ImageSet]:
        """The splits present, by name, in the order train, train_full, validation, test."""
        named = {"train": self.train, "train_full": self.train_full, "validation": self.validation, "test": self.test}
        return {name: part for name, part in named.items() if part is not None}

    def summary(self) -> dict[str, dict[str, int]]:
        """Counts per class per split: {split: {class: count}}."""
        return {name: part.counts() for name, part in self.splits().items()}


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


def generated_to_uint8(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A sampler's output [N, C, H, W] float in [-1, 1] -> (uint8 [N, C, H, W], finite [N] bool: every value of
    image i was finite), both on the images' device. A NaN value becomes 0 (black) and an infinite one its
    clipped end, where float_to_uint8 would leave NaN's byte undefined: a diverged network's samples are
    images still, and ``finite`` says which ones they are."""
    finite = torch.isfinite(images).flatten(1).all(1)
    return float_to_uint8(torch.nan_to_num(images, nan=-1.0)), finite


def fingerprint(*, name: str, splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
                class_names: tuple[str, ...]) -> str:
    """sha256 over the name, the class names and every split's pixels and labels -> 16 hex chars.

    It is a function of the loaded data only: it changes when the files, the split or the preprocessing
    change what comes out, and not when the data merely moves to another path.
    """
    h = hashlib.sha256()
    h.update(json.dumps({"name": name, "classes": list(class_names)}).encode())
    for split in sorted(splits):
        images, labels = splits[split]
        h.update(split.encode())
        h.update(json.dumps(list(images.shape)).encode())
        h.update(memoryview(images.contiguous().numpy()).cast("B"))  # no copy of the pixels
        h.update(memoryview(labels.contiguous().numpy()).cast("B"))
    return h.hexdigest()[:16]


def build_splits(name: str, class_names: tuple[str, ...], splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
                 options: dict) -> DatasetSplits:
    """Wrap loaded arrays into a fingerprinted DatasetSplits. splits: {"train"|"train_full"|"validation"|"test":
    (images [N, C, H, W] uint8, labels [N] int64)}; train and test are required."""
    for split in ("train", "test"):
        if split not in splits or len(splits[split][1]) == 0:
            raise DatasetError(f"{name}: the {split} split is empty (options {options})")
    sets = {split: ImageSet(images, labels, tuple(class_names), split) for split, (images, labels) in splits.items()}
    return DatasetSplits(name=name, train=sets["train"], test=sets["test"], validation=sets.get("validation"),
                         train_full=sets.get("train_full"),
                         fingerprint=fingerprint(name=name, splits=splits, class_names=tuple(class_names)),
                         options=options)


def select_classes(available: tuple[str, ...], requested, source: str,
                   aliases: dict[str, str] | None = None) -> tuple[str, ...]:
    """The class names to keep, in the dataset's order. requested: None (all) or names, each a
    canonical name or an alias (e.g. CK+'s folder name "anger" for "angry"). source names the data
    in the error raised for an unknown name, which lists the known ones."""
    if not requested:
        return tuple(available)
    aliases = aliases or {}
    wanted = set()
    for item in requested:
        canonical = aliases.get(item, item)
        if canonical not in available:
            raise DatasetError(f"{source}: unknown class {item!r}; known classes: {', '.join(available)}")
        wanted.add(canonical)
    return tuple(name for name in available if name in wanted)


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """[N, C, H, W] uint8 with C in (1, 3) -> [N, channels, H, W]: gray repeated to RGB, RGB to
    gray by ITU-R 601 luma (as PIL's "L" conversion)."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return images.repeat(1, 3, 1, 1)
    if c == 3 and channels == 1:
        weights = torch.tensor([299, 587, 114], dtype=torch.int32).view(1, 3, 1, 1)
        return ((images.int() * weights).sum(1, keepdim=True) + 500).div(1000, rounding_mode="floor").to(torch.uint8)
    raise ValueError(f"cannot convert {c} channels to {channels}")


def resize_square(images: torch.Tensor, size: int, chunk: int = 2048) -> torch.Tensor:
    """[N, C, H, W] uint8 -> [N, C, size, size] uint8: antialiased bicubic (as PIL's BICUBIC), in chunks
    so that memory stays near the output's size. Square inputs only (crop first)."""
    n, c, h, w = images.shape
    if h != w:
        raise ValueError(f"resize_square takes square images, got {h}x{w}")
    if h == size:
        return images
    out = torch.empty((n, c, size, size), dtype=torch.uint8)
    for start in range(0, n, chunk):
        part = images[start:start + chunk].float()
        part = F.interpolate(part, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        out[start:start + chunk] = part.round().clamp(0, 255).to(torch.uint8)
    return out


def seeded_permutation(n: int, *seed: int | str) -> np.ndarray:
    """A permutation of 0..n-1 determined by ``seed`` (ints and strings, e.g. (seed, "split", "angry"))."""
    key = [int(hashlib.sha256(str(part).encode()).hexdigest()[:8], 16) if isinstance(part, str) else int(part)
           for part in seed]
    return np.random.default_rng(key).permutation(n)
