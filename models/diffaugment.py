"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) for GAN training on little data.

The same random transform is applied to the real and the fake images the discriminator sees, and
every op is differentiable with respect to the pixels, so the generator still gets gradients through
the augmentation. Images are [B, C, H, W] floats in [-1, 1], as in the original, whose magnitudes are
kept:
  "color":       brightness  x + b,                          b ~ U[-0.5, 0.5)  (a quarter of the [-1, 1] range)
                 saturation  m_c + s (x - m_c),              s ~ U[0, 2)       m_c: the pixel's mean over channels
                 contrast    m + c (x - m),                  c ~ U[0.5, 1.5)   m: the image's mean
  "translation": shift by an integer in [-H // 8, H // 8] rows and [-W // 8, W // 8] columns, zero-filled
  "cutout":      zero an (H // 2) x (W // 2) square centred anywhere in the image (clipped at the border)
"Zero" is mid-gray in [-1, 1], as in the original. Saturation is the identity on 1-channel images (a
pixel's mean over one channel is the pixel itself), but its factor is still drawn, so the random stream
does not depend on the channel count.

Each op draws one set of parameters per sample and applies it to every tensor passed, so
``diff_augment(a, b)`` transforms the pair (a[i], b[i]) identically.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Transform = Callable[[torch.Tensor], torch.Tensor]


class _Draws:
    """Per-sample random parameters from ``generator`` (or the global RNG), drawn on the images' device (the
    generator must be made for it: models/accel.py training_generator)."""

    def __init__(self, batch: int, device: torch.device, generator: torch.Generator | None):
        self.batch = batch
        self.device = device
        self.generator = generator

    def uniform(self, low: float, high: float) -> torch.Tensor:
        """[B, 1, 1, 1] float32 ~ U[low, high)."""
        u = torch.rand(self.batch, generator=self.generator, device=self.device)
        return (low + (high - low) * u).view(-1, 1, 1, 1)

    def integers(self, low: int, high: int) -> torch.Tensor:
        """[B] int64 uniform in [low, high)."""
        return torch.randint(low, high, (self.batch,), generator=self.generator, device=self.device)


def _color(draws: _Draws, shape: torch.Size) -> Transform:
    brightness = draws.uniform(-0.5, 0.5)
    saturation = draws.uniform(0.0, 2.0)
    contrast = draws.uniform(0.5, 1.5)

    def apply(x: torch.Tensor) -> torch.Tensor:
        x = x + brightness.to(x.dtype)
        channel_mean = x.mean(dim=1, keepdim=True)
        x = channel_mean + saturation.to(x.dtype) * (x - channel_mean)
        image_mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return image_mean + contrast.to(x.dtype) * (x - image_mean)

    return apply


def _translation(draws: _Draws, shape: torch.Size) -> Transform:
    b, _, h, w = shape
    max_dy, max_dx = h // 8, w // 8
    dy, dx = draws.integers(-max_dy, max_dy + 1), draws.integers(-max_dx, max_dx + 1)  # [B]
    # output pixel (i, j) of sample n reads input pixel (i - dy[n], j - dx[n]), in the zero-padded image
    rows = torch.arange(h, device=draws.device)[None, :] - dy[:, None] + max_dy  # [B, H]
    cols = torch.arange(w, device=draws.device)[None, :] - dx[:, None] + max_dx  # [B, W]
    batch = torch.arange(b, device=draws.device)[:, None, None]

    def apply(x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (max_dx, max_dx, max_dy, max_dy))
        # advanced indices around a slice: the result is [B, H, W, C]
        return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()

    return apply


def _cutout(draws: _Draws, shape: torch.Size) -> Transform:
    _, _, h, w = shape
    size_y, size_x = h // 2, w // 2
    top = draws.integers(0, h) - size_y // 2  # [B]: the square's first row (may lie outside the image)
    left = draws.integers(0, w) - size_x // 2
    rows = torch.arange(h, device=draws.device)[None, :] - top[:, None]  # [B, H]: row offset into the square
    cols = torch.arange(w, device=draws.device)[None, :] - left[:, None]
    inside = ((rows >= 0) & (rows < size_y))[:, :, None] & ((cols >= 0) & (cols < size_x))[:, None, :]
    keep = (~inside)[:, None]  # [B, 1, H, W]

    def apply(x: torch.Tensor) -> torch.Tensor:
        return x * keep.to(x.dtype)

    return apply


# name -> op(draws, image shape) -> the transform with this op's per-sample parameters drawn
OPS: dict[str, Callable[[_Draws, torch.Size], Transform]] = {
    "color": _color,
    "translation": _translation,
    "cutout": _cutout,
}


def parse_policy(policy: str) -> tuple[str, ...]:
    """"color,translation" -> ("color", "translation"); "" -> (). Raises ValueError on an unknown op."""
    names = tuple(name.strip() for name in policy.split(",") if name.strip())
    unknown = [name for name in names if name not in OPS]
    if unknown:
        raise ValueError(f"unknown DiffAugment op(s) {unknown} in policy {policy!r}; valid: {list(OPS)}")
    return names


def diff_augment(*images: torch.Tensor, policy: str = "color,translation,cutout",
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    """Augment each of ``images`` (each [B, C, H, W] in [-1, 1], all the same shape) with the ops of
    ``policy`` in order -> a tuple of as many [B, C, H, W] tensors. Sample i of every tensor gets the
    same transform; different samples get independent ones, drawn from ``generator`` (a
    torch.Generator for the images' device; None: the global RNG). Differentiable with respect to the images."""
    ops = parse_policy(policy)
    if not images:
        raise ValueError("diff_augment needs at least one image tensor")
    shape = images[0].shape
    if len(shape) != 4 or any(x.shape != shape for x in images):
        shapes = [tuple(x.shape) for x in images]
        raise ValueError(f"diff_augment takes [B, C, H, W] tensors of one shape, got {shapes}")
    draws = _Draws(shape[0], images[0].device, generator)
    out = list(images)
    for name in ops:
        transform = OPS[name](draws, shape)
        out = [transform(x) for x in out]
    return tuple(out)
