"""CK+48 (Kaggle): one folder per emotion (anger, contempt, disgust, fear, happy, sadness, surprise),
981 grayscale 48x48 images, the last three frames of each posed sequence.

Folder names are mapped to FER2013's names (anger -> angry, sadness -> sad) so tables line up across
datasets; contempt, which FER2013 lacks, comes last. CK+ has no official split. Because a subject's
frames are near-duplicates, the split is by subject whenever the file names carry it
(``S010_004_00000017.png`` is subject S010): no person is in both train and test. Otherwise it is a
stratified split by image.
"""

from __future__ import annotations

import os
import re

import numpy as np
import torch

from condgen_bench.datasets.base import FER_EMOTIONS, DatasetError, DatasetSplits, select_classes
from condgen_bench.datasets.image_files import class_folders, image_files, read_images
from condgen_bench.datasets.splits import finish, grouped_split, stratified_split

FOLDER_TO_EMOTION = {"anger": "angry", "contempt": "contempt", "disgust": "disgust", "fear": "fear",
                     "happy": "happy", "sadness": "sad", "surprise": "surprise"}
CLASSES = tuple(name for name in FER_EMOTIONS if name in FOLDER_TO_EMOTION.values()) + ("contempt",)
SUBJECT = re.compile(r"^(S\d+)_")  # CK+ file names start with the subject id


def subject_of(path: str) -> str | None:
    """The subject id in a CK+ file name ("S010_004_00000017.png" -> "S010"), or None."""
    match = SUBJECT.match(os.path.basename(path))
    return match.group(1) if match else None


def load_ckplus(root: str, image_size: int = 48, channels: int = 1, classes=None, test_fraction: float = 0.2,
                shots_per_class=None, seed: int = 0, validation_fraction: float = 0.1) -> DatasetSplits:
    """CK+48 from ``root`` (the folder holding the emotion folders): train and test splits, by subject
    when every file name carries one, ``test_fraction`` of each class in test as nearly as subjects
    allow. Folder names may be the CK+ ones or the canonical ones, in any case."""
    what = f"CK+48 emotion folders ({', '.join(FOLDER_TO_EMOTION)})"
    folders = class_folders(root, what)
    canonical = {}
    for folder in folders:
        name = FOLDER_TO_EMOTION.get(folder.lower(), folder.lower())
        if name not in CLASSES:
            raise DatasetError(f"{os.path.join(root, folder)}: not a CK+ emotion folder; expected {', '.join(FOLDER_TO_EMOTION)}")
        canonical[name] = folder
    present = tuple(name for name in CLASSES if name in canonical)
    keep = select_classes(present, classes, root, aliases=FOLDER_TO_EMOTION)

    paths, labels = [], []
    for label, name in enumerate(keep):
        files = image_files(os.path.join(root, canonical[name]))
        paths += files
        labels += [label] * len(files)
    labels = np.asarray(labels)
    subjects = [subject_of(path) for path in paths]
    if all(subjects):
        train_rows, test_rows = grouped_split(labels, subjects, test_fraction, seed)
        rule = f"by subject (file name prefix), {test_fraction:.0%} of each class in test as nearly as subjects allow"
    else:
        train_rows, test_rows = stratified_split(labels, test_fraction, seed)
        rule = f"stratified by class, {test_fraction:.0%} in test (file names carry no subject id)"
    splits = {}
    for split, rows in (("train", train_rows), ("test", test_rows)):
        splits[split] = (read_images([paths[i] for i in rows], channels, image_size),
                         torch.from_numpy(labels[rows]).long())
    options = {"data_root": os.path.abspath(root), "image_size": image_size, "channels": channels,
               "classes": list(keep), "split": rule, "seed": seed}
    if all(subjects):
        options["subjects"] = {split: len({subjects[i] for i in rows})
                               for split, rows in (("train", train_rows), ("test", test_rows))}
    # the validation split held out of train by subject too (finish)
    groups = [subjects[i] for i in train_rows] if all(subjects) else None
    return finish("ckplus", keep, splits, options, shots_per_class, seed, root, validation_fraction, groups, "subject")
