"""Reading labelled image folders (``root/<class>/<image>``) into one uint8 tensor.

Shared by the FER2013 folder version, CK+48 and ``imagefolder``. Hidden files, macOS resource forks
(``._name.jpg``, ``__MACOSX``) and files that are not images by extension (``Thumbs.db``, ``notes.txt``)
are skipped; an image file that cannot be decoded is an error that names it.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image, ImageOps

from condgen_bench.datasets.base import DatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")  # compared case-insensitively
CROPS = ("center", "none")  # center: the largest centred square, then resize; none: resize the whole image


def _visible(name: str) -> bool:
    return not name.startswith(".") and name != "__MACOSX"


def is_image_file(name: str) -> bool:
    """True for a visible file with an image extension, in any case (``A.JPG``, ``b.Png``)."""
    return _visible(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def require_dir(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise DatasetError(f"{path}: no such file or folder ({what})")
    if not os.path.isdir(path):
        raise DatasetError(f"{path}: not a folder ({what})")


def class_folders(root: str, what: str) -> list[str]:
    """Names of the class folders directly under ``root``, sorted. Raises DatasetError when ``root``
    is missing or holds no folder."""
    require_dir(root, what)
    names = sorted(name for name in os.listdir(root) if _visible(name) and os.path.isdir(os.path.join(root, name)))
    if not names:
        raise DatasetError(f"{root}: no class folders found; expected {what}")
    return names


def image_files(folder: str) -> list[str]:
    """Absolute paths of the image files directly in ``folder``, sorted by name. Raises DatasetError
    when there are none."""
    files = sorted(os.path.join(folder, name) for name in os.listdir(folder)
                   if is_image_file(name) and os.path.isfile(os.path.join(folder, name)))
    if not files:
        raise DatasetError(f"{folder}: class folder holds no images (extensions {', '.join(IMAGE_EXTENSIONS)})")
    return files


def _to_8bit(img: Image.Image) -> Image.Image:
    """16- and 32-bit integer and float images -> 8-bit "L" (16-bit scaled by 1/257)."""
    if img.mode.startswith("I;16") or img.mode == "I":
        values = np.asarray(img).astype(np.int64)
        if img.mode.startswith("I;16") or values.max() > 255:
            values = values // 257
        return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L")
    if img.mode == "F":
        return Image.fromarray(np.clip(np.rint(np.asarray(img)), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        return img.convert("RGBA")  # keeps a transparency entry instead of warning about it
    return img


def read_image(path: str, channels: int, size: int, crop: str = "center") -> np.ndarray:
    """Decode one image file -> [channels, size, size] uint8: EXIF orientation applied, 16-bit scaled
    to 8, alpha dropped, converted to gray (ITU-R 601 luma) or RGB, cropped by ``crop``, resized with
    antialiased bicubic when its size differs."""
    if crop not in CROPS:
        raise ValueError(f"unknown crop {crop!r}; valid: {list(CROPS)}")
    try:
        with Image.open(path) as opened:
            opened.load()  # decodes now: a truncated or corrupt file fails here
            img = _to_8bit(ImageOps.exif_transpose(opened))
            img = img.convert("L" if channels == 1 else "RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
    w, h = img.size
    if crop == "center" and w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    pixels = np.asarray(img, dtype=np.uint8)
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def read_images(paths: list[str], channels: int, size: int, crop: str = "center") -> torch.Tensor:
    """Decode files into one tensor [len(paths), channels, size, size] uint8 (see read_image)."""
    out = torch.empty((len(paths), channels, size, size), dtype=torch.uint8)
    view = out.numpy()
    for i, path in enumerate(paths):
        view[i] = read_image(path, channels, size, crop)
    return out
