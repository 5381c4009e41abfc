"""FER2013, in either form people have it (Kaggle).

- The original ``fer2013.csv``: header ``emotion,pixels,Usage`` (any column order; the ICML copy's
  spaces after the commas are accepted), ``pixels`` = 2,304 space-separated integers 0..255 (48x48
  row-major), ``Usage`` = Training / PublicTest / PrivateTest -> train / validation / test.
- The folder version: ``train/<emotion>/*.jpg`` and ``test/<emotion>/*.jpg``, 48x48 grayscale, folder
  names angry, disgust, fear, happy, neutral, sad, surprise.

Labels follow the CSV: 0..6 = angry, disgust, fear, happy, sad, surprise, neutral (FER_EMOTIONS), in
both forms. The CSV is parsed in two streaming passes (labels and Usage first, then the pixels straight
into preallocated per-split arrays), so memory stays near the size of the images themselves.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from condgen_bench.datasets.base import FER_EMOTIONS, DatasetError, DatasetSplits, resize_square, select_classes, to_channels
from condgen_bench.datasets.image_files import class_folders, image_files, read_images
from condgen_bench.datasets.splits import finish

SIDE = 48  # FER2013 images are 48x48
USAGE_SPLITS = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}
COLUMNS = ("emotion", "pixels", "Usage")
CSV_NAME = "fer2013.csv"


def _field(raw: bytes) -> bytes:
    return raw.strip().strip(b'"').strip()


def _header(path: str, line: bytes) -> dict[str, int]:
    """Column positions {name: index} from the header line; DatasetError unless it names all three."""
    names = [_field(part).decode("utf-8", "replace").lstrip("\ufeff") for part in line.split(b",")]
    positions = {name: i for i, name in enumerate(names)}
    missing = [name for name in COLUMNS if name not in positions]
    if missing:
        raise DatasetError(f"{path}, line 1: header {','.join(names)!r} lacks {', '.join(missing)}; "
                           f"expected the FER2013 header {','.join(COLUMNS)}")
    return {name: positions[name] for name in COLUMNS} | {"_count": len(names)}


def _rows(path: str, f, columns: dict[str, int]):
    """Yield (line number, fields) for every non-blank data line, checking the field count."""
    for lineno, line in enumerate(f, start=2):
        if not line.strip():
            continue
        fields = line.split(b",")
        if len(fields) != columns["_count"]:
            raise DatasetError(f"{path}, line {lineno}: {len(fields)} fields, expected {columns['_count']} "
                               f"({', '.join(COLUMNS)})")
        yield lineno, fields


def _label_and_split(path: str, lineno: int, fields: list[bytes], columns: dict[str, int]) -> tuple[int, str]:
    text = _field(fields[columns["emotion"]]).decode("utf-8", "replace")
    try:
        label = int(text)
    except ValueError:
        raise DatasetError(f"{path}, line {lineno}: emotion {text!r} is not an integer label 0..6") from None
    if not 0 <= label < len(FER_EMOTIONS):
        raise DatasetError(f"{path}, line {lineno}: emotion label {label} out of range 0..6")
    usage = _field(fields[columns["Usage"]]).decode("utf-8", "replace")
    if usage not in USAGE_SPLITS:
        raise DatasetError(f"{path}, line {lineno}: Usage {usage!r} is not one of {', '.join(USAGE_SPLITS)}")
    return label, USAGE_SPLITS[usage]


def _pixels(path: str, lineno: int, raw: bytes) -> np.ndarray:
    """One row's pixel field -> [2304] int16, or DatasetError saying what is wrong with it."""
    try:
        values = np.fromstring(raw, dtype=np.int16, sep=" ")  # stops (and warns/raises) at a bad token
        if values.size == SIDE * SIDE and values.min() >= 0 and values.max() <= 255:
            return values
    except (ValueError, DeprecationWarning):
        pass
    tokens = raw.split()  # the slow path, only to explain the failure
    for j, token in enumerate(tokens, start=1):
        if not token.isdigit():
            raise DatasetError(f"{path}, line {lineno}: pixel {j} is {token.decode('utf-8', 'replace')!r}, "
                               f"not an integer 0..255")
        if int(token) > 255:
            raise DatasetError(f"{path}, line {lineno}: pixel {j} is {int(token)}, out of range 0..255")
    raise DatasetError(f"{path}, line {lineno}: {len(tokens)} pixel values, expected {SIDE * SIDE} (48x48)")


def read_fer2013_csv(path: str, keep: tuple[str, ...]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Parse fer2013.csv. keep: the class names to keep (FER_EMOTIONS order). Returns {split: (images
    [N, 1, 48, 48] uint8, labels [N] int64 indexing ``keep``)} for the splits that have rows."""
    new_label = {FER_EMOTIONS.index(name): i for i, name in enumerate(keep)}
    with open(path, "rb") as f:  # pass 1: labels and splits, all checked, with line numbers
        columns = _header(path, f.readline())
        labels = {split: [] for split in USAGE_SPLITS.values()}
        for lineno, fields in _rows(path, f, columns):
            label, split = _label_and_split(path, lineno, fields, columns)
            if label in new_label:
                labels[split].append(new_label[label])
    if not any(labels.values()):
        raise DatasetError(f"{path}: no data rows for classes {', '.join(keep)}")
    images = {split: np.empty((len(rows), SIDE * SIDE), dtype=np.uint8) for split, rows in labels.items()}
    filled = dict.fromkeys(labels, 0)
    with open(path, "rb") as f, warnings.catch_warnings():  # pass 2: pixels, into their split's array
        warnings.simplefilter("error", DeprecationWarning)
        f.readline()
        for lineno, fields in _rows(path, f, columns):
            label, split = _label_and_split(path, lineno, fields, columns)
            if label in new_label:
                images[split][filled[split]] = _pixels(path, lineno, _field(fields[columns["pixels"]]))
                filled[split] += 1
    return {split: (torch.from_numpy(images[split]).view(-1, 1, SIDE, SIDE),
                    torch.tensor(labels[split], dtype=torch.int64))
            for split in labels if labels[split]}


def read_fer2013_folders(root: str, keep: tuple[str, ...], size: int,
                         channels: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Read the folder version: {"train"|"test": (images [N, channels, size, size] uint8, labels [N])}."""
    out = {}
    for split in ("train", "test"):
        split_dir = os.path.join(root, split)
        what = f"FER2013 folders {split}/<emotion>/*.jpg with emotions {', '.join(sorted(FER_EMOTIONS))}"
        folders = class_folders(split_dir, what)
        unknown = [name for name in folders if name not in FER_EMOTIONS]
        if unknown:
            raise DatasetError(f"{os.path.join(split_dir, unknown[0])}: not a FER2013 emotion folder; "
                               f"expected {', '.join(sorted(FER_EMOTIONS))}")
        paths, labels = [], []
        for label, name in enumerate(keep):
            if name in folders:
                files = image_files(os.path.join(split_dir, name))
                paths += files
                labels += [label] * len(files)
        out[split] = (read_images(paths, channels, size, crop="center"), torch.tensor(labels, dtype=torch.int64))
    return out


def locate(root: str) -> tuple[str, str]:
    """What ``root`` holds: ("csv", path of the CSV) or ("folders", root). Accepts the CSV itself, a
    folder holding fer2013.csv (or Kaggle's fer2013/fer2013.csv), or a folder holding train/ and test/."""
    if not os.path.exists(root):
        raise DatasetError(f"{root}: no such file or folder (FER2013: fer2013.csv or a folder with train/ and test/)")
    if os.path.isfile(root):
        return "csv", root
    for candidate in (os.path.join(root, CSV_NAME), os.path.join(root, "fer2013", CSV_NAME)):
        if os.path.isfile(candidate):
            return "csv", candidate
    if os.path.isdir(os.path.join(root, "train")) or os.path.isdir(os.path.join(root, "test")):
        return "folders", root
    raise DatasetError(f"{root}: found neither {CSV_NAME} nor train/ and test/ folders of FER2013")


def load_fer2013(root: str, image_size: int = SIDE, channels: int = 1, classes=None, shots_per_class=None,
                 seed: int = 0, validation_fraction: float = 0.1) -> DatasetSplits:
    """FER2013 from ``root`` (see locate), ``image_size`` px, 1 or 3 channels, optionally a class subset
    and a few-shot training split. The CSV gives train / validation / test; the folders train / test."""
    form, path = locate(root)
    keep = select_classes(FER_EMOTIONS, classes, path)
    if form == "csv":
        splits = read_fer2013_csv(path, keep)
        splits = {split: (to_channels(resize_square(images, image_size), channels), labels)
                  for split, (images, labels) in splits.items()}
        split_rule = "Usage: Training -> train, PublicTest -> validation, PrivateTest -> test"
    else:
        splits = read_fer2013_folders(path, keep, image_size, channels)
        split_rule = "folders: train/ -> train, test/ -> test"
    options = {"data_root": os.path.abspath(path), "format": form, "image_size": image_size, "channels": channels,
               "classes": list(keep), "split": split_rule}
    return finish("fer2013", keep, splits, options, shots_per_class, seed, path, validation_fraction)
