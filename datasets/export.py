"""Write images in the real datasets' on-disk formats: the FER2013 CSV, the FER2013 folder version, CK+48
folders with subject-coded file names, and a generic class-folder tree.

Used by the tests and the benchmarks, and by anyone who wants to try a loader without the real data:

    python -m condgen_bench.datasets.export fer2013-csv /tmp/fer2013.csv --identities 100
    python -m condgen_bench.datasets.export ckplus /tmp/ckplus --identities 40

writes the embedded synthetic faces in that format.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from PIL import Image

from condgen_bench.datasets.base import FER_EMOTIONS
from condgen_bench.datasets.synthetic_faces import render_faces

USAGES = ("Training", "PublicTest", "PrivateTest")
CKPLUS_FOLDERS = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happy", "sad": "sadness",
                  "surprise": "surprise"}  # CK+ folder name of each FER2013 emotion it shares


def write_fer2013_csv(path: str, images: torch.Tensor, labels: torch.Tensor, usages: list[str]) -> None:
    """Write fer2013.csv. images: [N, 1, 48, 48] uint8; labels: [N] in 0..6; usages: N of USAGES."""
    if images.shape[1:] != (1, 48, 48):
        raise ValueError(f"FER2013 rows are 1x48x48, got {tuple(images.shape[1:])}")
    flat = images.reshape(len(images), -1).numpy()
    with open(path, "w", newline="\n") as f:
        f.write("emotion,pixels,Usage\n")
        for row, label, usage in zip(flat, labels.tolist(), usages):
            f.write(f"{label},{' '.join(map(str, row.tolist()))},{usage}\n")


def save_image(path: str, image: torch.Tensor) -> None:
    """Save one image [C, H, W] uint8 (C = 1 or 3) in the format its extension names."""
    array = image.permute(1, 2, 0).numpy()
    Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(path)


def write_class_folders(root: str, images: torch.Tensor, labels: torch.Tensor, folder_names: list[str],
                        ext: str = ".png", file_names: list[str] | None = None) -> None:
    """Write root/<folder_names[label]>/<name><ext>. images: [N, C, H, W] uint8; labels: [N];
    file_names: N stems (default img_00000, ...)."""
    for i, (image, label) in enumerate(zip(images, labels.tolist())):
        folder = os.path.join(root, folder_names[label])
        os.makedirs(folder, exist_ok=True)
        stem = file_names[i] if file_names else f"img_{i:05d}"
        save_image(os.path.join(folder, stem + ext), image)


def synthetic_rows(identities: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Synthetic faces at 48 px: (images [7 * identities, 1, 48, 48] uint8, labels [N], identity [N])."""
    images, labels = render_faces(seed, identities, 48)
    identity = np.repeat(np.arange(identities), len(FER_EMOTIONS))
    return torch.from_numpy(images[:, None]).contiguous(), torch.from_numpy(labels).long(), identity


def export(form: str, out: str, identities: int, seed: int = 0) -> None:
    """Write ``identities`` x 7 synthetic faces at ``out`` in format ``form`` (see FORMATS)."""
    images, labels, identity = synthetic_rows(identities, seed)
    if form == "fer2013-csv":
        # FER2013's own proportions: 80% Training, 10% PublicTest, 10% PrivateTest, by identity
        usage = np.array(USAGES)[np.digitize(identity / identities, [0.8, 0.9])]
        write_fer2013_csv(out, images, labels, usage.tolist())
    elif form == "fer2013-folders":
        test = identity >= int(0.8 * identities)
        for split, rows in (("train", ~test), ("test", test)):
            rows = torch.from_numpy(np.flatnonzero(rows))
            write_class_folders(os.path.join(out, split), images[rows], labels[rows], list(FER_EMOTIONS), ".jpg")
    elif form == "ckplus":
        keep = torch.tensor([name in CKPLUS_FOLDERS for name in FER_EMOTIONS])[labels]
        rows = torch.nonzero(keep).squeeze(1)
        names = [f"S{identity[i] + 10:03d}_{int(labels[i]) + 1:03d}_{17:08d}" for i in rows.tolist()]
        folders = [CKPLUS_FOLDERS.get(name, name) for name in FER_EMOTIONS]
        write_class_folders(out, images[rows], labels[rows], folders, ".png", names)
    elif form == "imagefolder":
        write_class_folders(out, images, labels, list(FER_EMOTIONS), ".png")
    else:
        raise ValueError(f"unknown format {form!r}; valid: {list(FORMATS)}")


FORMATS = ("fer2013-csv", "fer2013-folders", "ckplus", "imagefolder")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write the synthetic faces in a real dataset's format.")
    parser.add_argument("format", choices=FORMATS)
    parser.add_argument("out", help="the CSV file (fer2013-csv) or the root folder to write")
    parser.add_argument("--identities", type=int, default=100, help="people drawn; each gives one face per emotion")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    export(args.format, args.out, args.identities, args.seed)
    print(f"wrote {args.identities * len(FER_EMOTIONS)} synthetic faces as {args.format} to {args.out}")
