"""Any labelled image folder: ``root/<class>/<image>``, or ``root/train/<class>/<image>`` with
``root/test/<class>/<image>`` (and optionally ``root/val/`` or ``root/validation/``).

Images of any size and mode are cropped to a centred square (or not, ``crop="none"``), resized to
``image_size`` and converted to gray or RGB. Without a test folder the split is stratified and seeded.
``shots_per_class`` keeps K training images a class for few-shot runs; the test split stays whole.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from condgen_bench.datasets.base import DatasetError, DatasetSplits, select_classes
from condgen_bench.datasets.image_files import class_folders, image_files, read_images
from condgen_bench.datasets.splits import finish, shuffled, stratified_split

SPLIT_FOLDERS = {"train": ("train",), "validation": ("val", "validation"), "test": ("test",)}


def _split_folders(root: str) -> dict[str, str] | None:
    """{split: folder} when ``root`` holds train/ and test/ (the split layout), else None."""
    found = {}
    for split, names in SPLIT_FOLDERS.items():
        for name in names:
            if os.path.isdir(os.path.join(root, name)):
                found[split] = os.path.join(root, name)
                break
    if "train" in found and "test" in found:
        return found
    return None


def _gather(folder: str, keep: tuple[str, ...], present: list[str]) -> tuple[list[str], np.ndarray]:
    """Image paths and labels (indices into ``keep``) of the kept classes present under ``folder``."""
    paths, labels = [], []
    for label, name in enumerate(keep):
        if name in present:
            files = image_files(os.path.join(folder, name))
            paths += files
            labels += [label] * len(files)
    return paths, np.asarray(labels, dtype=np.int64)


def load_imagefolder(root: str, image_size: int = 48, channels: int = 3, crop: str = "center", classes=None,
                     test_fraction: float = 0.2, shots_per_class=None, seed: int = 0,
                     validation_fraction: float = 0.1) -> DatasetSplits:
    """Load ``root`` (see the module docstring). Class names are the folder names, sorted; ``classes``
    keeps a subset. Returns train / test (and validation when there is a val folder)."""
    what = "root/<class>/<image> or root/train/<class>/ with root/test/<class>/"
    split_dirs = _split_folders(root) if os.path.isdir(root) else None
    if split_dirs is None:
        available = tuple(class_folders(root, what))
        keep = select_classes(available, classes, root)
        paths, labels = _gather(root, keep, list(available))
        train_rows, test_rows = stratified_split(labels, test_fraction, seed)
        parts = {"train": ([paths[i] for i in train_rows], labels[train_rows]),
                 "test": ([paths[i] for i in test_rows], labels[test_rows])}
        rule = f"stratified by class, {test_fraction:.0%} in test, seed {seed}"
    else:
        folders = {split: class_folders(folder, what) for split, folder in split_dirs.items()}
        available = tuple(folders["train"])
        for split, names in folders.items():
            extra = [name for name in names if name not in available]
            if extra:
                raise DatasetError(f"{os.path.join(split_dirs[split], extra[0])}: class not in "
                                   f"{split_dirs['train']} (known classes: {', '.join(available)})")
        keep = select_classes(available, classes, split_dirs["train"])
        parts = {}
        for split, folder in split_dirs.items():
            paths, labels = _gather(folder, keep, folders[split])
            order = shuffled(np.arange(len(paths)), seed, split)
            parts[split] = ([paths[i] for i in order], labels[order])
        rule = "folders: " + ", ".join(f"{os.path.basename(f)}/ -> {s}" for s, f in split_dirs.items())
    splits = {split: (read_images(paths, channels, image_size, crop), torch.from_numpy(labels))
              for split, (paths, labels) in parts.items()}
    options = {"data_root": os.path.abspath(root), "image_size": image_size, "channels": channels, "crop": crop,
               "classes": list(keep), "split": rule}
    return finish("imagefolder", keep, splits, options, shots_per_class, seed, root, validation_fraction)
