"""Seeded splits for datasets without an official one, class subsets, and few-shot subsets.

Every function works on label arrays and returns row indices, so a loader can choose its rows before
it decodes a single image. All are deterministic for a seed.
"""

from __future__ import annotations

import numpy as np
import torch

from condgen_bench.datasets.base import DatasetError, DatasetSplits, build_splits, seeded_permutation


def shuffled(rows: np.ndarray, seed: int, tag: str) -> np.ndarray:
    """rows [N] in a seeded order, so batches and the first-n evaluation images mix classes."""
    rows = np.asarray(rows, dtype=np.int64)
    return rows[seeded_permutation(len(rows), seed, tag)]


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split rows so that each class gives round(test_fraction * its count) to test (at least one
    when it has two or more). labels: [N] ints. Returns (train rows, test rows), each shuffled."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    labels = np.asarray(labels)
    train, test = [], []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        rows = rows[seeded_permutation(len(rows), seed, "split", int(c))]
        n_test = int(round(test_fraction * len(rows)))
        if len(rows) >= 2:
            n_test = min(max(n_test, 1), len(rows) - 1)
        test.append(rows[:n_test])
        train.append(rows[n_test:])
    return shuffled(np.concatenate(train), seed, "train"), shuffled(np.concatenate(test), seed, "test")


def grouped_split(labels: np.ndarray, groups: list[str], test_fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split rows so that no group (e.g. a person) is on both sides, with each class's share of test
    as close to ``test_fraction`` as whole groups allow.

    Greedy: groups are visited largest first (ties in a seeded order); a group goes to test when that
    brings the per-class test counts closer to their targets, measured relative to each target.
    labels: [N] ints; groups: N group names. Returns (train rows, test rows), each shuffled.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    labels = np.asarray(labels)
    names, group_of = np.unique(np.asarray(groups), return_inverse=True)
    num_classes = int(labels.max()) + 1
    counts = np.zeros((len(names), num_classes))
    np.add.at(counts, (group_of, labels), 1)
    target = test_fraction * counts.sum(0)
    scale = np.maximum(target, 1.0)

    order = seeded_permutation(len(names), seed, "groups")
    order = order[np.argsort(-counts[order].sum(1), kind="stable")]
    in_test = np.zeros(len(names), dtype=bool)
    taken = np.zeros(num_classes)
    for g in order:
        before = (((taken - target) / scale) ** 2).sum()
        after = (((taken + counts[g] - target) / scale) ** 2).sum()
        if after < before:
            in_test[g] = True
            taken += counts[g]
    test_rows = np.flatnonzero(in_test[group_of])
    train_rows = np.flatnonzero(~in_test[group_of])
    return shuffled(train_rows, seed, "train"), shuffled(test_rows, seed, "test")


def take_shots(labels: np.ndarray, shots: int, seed: int, class_names: tuple[str, ...],
               source: str) -> np.ndarray:
    """Rows keeping ``shots`` images of every class, chosen by a seeded order per class, so that the
    K-shot set is contained in the 2K-shot set of the same seed. labels: [N] ints. Returns rows
    (shuffled). Raises DatasetError, naming ``source``, when a class has fewer than ``shots``."""
    if shots < 1:
        raise ValueError(f"shots_per_class must be >= 1, got {shots}")
    labels = np.asarray(labels)
    keep = []
    for c, name in enumerate(class_names):
        rows = np.flatnonzero(labels == c)
        if len(rows) < shots:
            raise DatasetError(f"{source}: class {name!r} has {len(rows)} training images, "
                               f"fewer than shots_per_class={shots}")
        keep.append(rows[seeded_permutation(len(rows), seed, "shots", name)][:shots])
    return shuffled(np.concatenate(keep), seed, "shots")


def keep_classes(images: torch.Tensor, labels: torch.Tensor, class_names: tuple[str, ...],
                 keep: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the kept classes, relabelled 0..len(keep)-1 in ``keep``'s order.
    images: [N, C, H, W]; labels: [N] -> ([M, C, H, W], [M])."""
    if tuple(keep) == tuple(class_names):
        return images, labels
    old_to_new = torch.full((len(class_names),), -1, dtype=torch.int64)
    for new, name in enumerate(keep):
        old_to_new[class_names.index(name)] = new
    mapped = old_to_new[labels]
    rows = torch.nonzero(mapped >= 0).squeeze(1)
    return images[rows], mapped[rows]


def finish(name: str, class_names: tuple[str, ...], splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
           options: dict, shots_per_class: int | None, seed: int, source: str, validation_fraction: float = 0.1,
           groups: list[str] | None = None, group_name: str = "group") -> DatasetSplits:
    """The last step of every loader: hold out a validation split where the data has none, keep
    ``shots_per_class`` training images a class (when set), then fingerprint.
    splits: {"train"|"validation"|"test": (images [N, C, H, W] uint8, labels [N])}.

    Without a "validation" split, ``validation_fraction`` of each class's training images become one
    (seeded; with ``groups``, one name per training row such as CK+'s subjects, called ``group_name``, no group
    on both sides), so
    that the sweep's decisions never look at the test split; few-shot runs draw it before their shots, from
    the whole training split. The whole training split (less the validation) stays as "train_full" in
    few-shot runs, for the evaluation classifier only."""
    splits = dict(splits)
    options = dict(options)
    if "validation" not in splits:
        images, labels = splits["train"]
        if groups is not None:
            train_rows, held = grouped_split(labels.numpy(), groups, validation_fraction, seed + 1)
            rule = f"held out from train by {group_name}, {validation_fraction:.0%} of each class as nearly as they allow"
        else:
            train_rows, held = stratified_split(labels.numpy(), validation_fraction, seed + 1)
            rule = f"held out from train, {validation_fraction:.0%} of each class (stratified, seed {seed + 1})"
        if len(held) == 0:  # one image a class: nothing to hold out (the trial stages then score on test)
            options["validation"] = "none: too few training images to hold any out"
        else:
            splits["train"] = (images[torch.from_numpy(train_rows)], labels[torch.from_numpy(train_rows)])
            splits["validation"] = (images[torch.from_numpy(held)], labels[torch.from_numpy(held)])
            options["validation"] = rule
    if shots_per_class:
        images, labels = splits["train"]
        rows = torch.from_numpy(take_shots(labels.numpy(), shots_per_class, seed, class_names, source))
        splits["train_full"] = splits["train"]
        splits["train"] = (images[rows], labels[rows])
    return build_splits(name, class_names, splits, {**options, "shots_per_class": shots_per_class})
