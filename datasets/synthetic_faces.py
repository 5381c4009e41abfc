"""Procedurally drawn grayscale faces with the seven FER2013 emotions: the embedded dataset.

The emotion shows only through facial features: the mouth (curve, opening, width, a one-sided
sneer), the eyebrows (angle and height) and the eyes (opening). Identity varies independently:
face shape and size, position, skin and background tone, hair, feature placement, stroke width,
lighting and pixel noise.

No shortcut: every identity is drawn once and rendered with all seven emotions, and each image's
mean is then set to the mean of the same identity's neutral face. The distribution of image means
(and of every identity trait) is therefore the same in every class. Train and test identities are
disjoint. Everything is a pure function of (seed, image size, counts).

Drawing works in face coordinates u, v in [-1, 1] (v points down) with soft edges one pixel wide,
so the same faces can be rendered at any size.
"""

from __future__ import annotations

import numpy as np
import torch

from condgen_bench.datasets.base import FER_EMOTIONS, DatasetSplits, select_classes
from condgen_bench.datasets.splits import finish, keep_classes

# Expression parameters per emotion: mouth curve (+ = corners up), mouth opening, mouth width,
# sneer (one corner up), brow angle (+ = inner ends down, as in anger), brow raise, eye opening.
_EXPRESSIONS = {
    #            curve  open  width sneer  brow_ang brow_up eye_open
    "angry":    (-0.20, 0.00, 0.85, 0.00, 0.45, -0.05, 0.60),
    "disgust":  (-0.30, 0.06, 0.80, 0.55, 0.20, -0.03, 0.45),
    "fear":     (-0.10, 0.20, 1.15, 0.00, -0.35, 0.10, 1.40),
    "happy":    (0.60, 0.10, 1.15, 0.00, 0.00, 0.03, 0.75),
    "sad":      (-0.55, 0.00, 0.85, 0.00, -0.45, 0.02, 0.80),
    "surprise": (0.00, 0.40, 0.60, 0.00, 0.00, 0.16, 1.45),
    "neutral":  (0.00, 0.00, 0.95, 0.00, 0.00, 0.00, 1.00),
}
# Per-image jitter (standard deviations) of the same seven parameters: people express differently.
_EXPRESSION_JITTER = (0.08, 0.03, 0.07, 0.10, 0.08, 0.025, 0.10)

_CHUNK = 512  # images rendered at once (bounds memory at 128 px)


def _draw_identities(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Identity traits for n people, each [n]."""
    skin = rng.uniform(110, 215, n)
    # background contrasts with the skin, on either side
    side = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    background = np.clip(skin + side * rng.uniform(45, 110, n), 15, 245)
    rx = rng.uniform(0.55, 0.72, n)
    return {
        "cx": rng.uniform(-0.08, 0.08, n),
        "cy": rng.uniform(-0.05, 0.08, n),
        "rx": rx,
        "ry": rx * rng.uniform(1.12, 1.35, n),
        "skin": skin,
        "background": background,
        "hair": np.where(rng.random(n) < 0.85, rng.uniform(10, 95, n), -1.0),  # -1: no hair
        # hair covers this fraction of the face height from the top; stays above the highest brow
        "hairline": rng.uniform(0.06, 0.20, n),
        "eye_dx": rng.uniform(0.33, 0.42, n),  # eye distance from the midline, in face widths
        "eye_dy": rng.uniform(0.10, 0.22, n),  # eyes above the face centre, in face heights
        "mouth_dy": rng.uniform(0.40, 0.52, n),  # mouth below the centre, in face heights
        "stroke": rng.uniform(0.045, 0.07, n),  # width of brows and lips, face coordinates
        "feature_dark": rng.uniform(70, 120, n),  # how much darker than the skin lips and eyes are
        "light_dx": rng.uniform(-18, 18, n),  # linear lighting gradient, gray levels across the image
        "light_dy": rng.uniform(-18, 18, n),
        "noise": rng.uniform(3, 9, n),  # pixel noise std, gray levels
    }


_KEYS = ("curve", "open", "width", "sneer", "brow_angle", "brow_up", "eye_open")


def _expression(names: list[str], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Jittered expression parameters for the given emotion names, each [len(names)]."""
    base = np.array([_EXPRESSIONS[n] for n in names])
    params = base + rng.normal(size=base.shape) * np.array(_EXPRESSION_JITTER)
    out = dict(zip(_KEYS, params.T))
    out["open"] = np.clip(out["open"], 0, None)
    out["eye_open"] = np.clip(out["eye_open"], 0.25, None)
    out["sneer_side"] = np.where(rng.random(len(names)) < 0.5, -1.0, 1.0)
    return out


def _cover(sd: np.ndarray, pixel: float) -> np.ndarray:
    """Coverage of a shape from its signed distance (negative inside), soft over one pixel."""
    return np.clip(0.5 - sd / pixel, 0.0, 1.0)


def _segment_distance(u, v, x0, y0, x1, y1):
    """Distance from points (u, v) [n, H, W] to segments (x0, y0)-(x1, y1), each [n, 1, 1]."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((u - x0) * dx + (v - y0) * dy) / (dx * dx + dy * dy), 0, 1)
    return np.hypot(u - x0 - t * dx, v - y0 - t * dy)


def _ellipse_sd(u, v, cx, cy, a, b):
    """Approximate signed distance to an axis-aligned ellipse (exact on its axes)."""
    return (np.hypot((u - cx) / a, (v - cy) / b) - 1.0) * np.minimum(a, b)


def _render(ident: dict[str, np.ndarray], expr: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Draw faces. Every parameter is [n]. Returns [n, size, size] float64 gray levels (no noise)."""
    n = len(ident["cx"])
    pixel = 2.0 / size
    coords = (np.arange(size) + 0.5) * pixel - 1.0
    u = np.broadcast_to(coords[None, None, :], (n, size, size))
    v = np.broadcast_to(coords[None, :, None], (n, size, size))
    p = {k: val[:, None, None] for k, val in {**ident, **expr}.items()}
    cx, cy, rx, ry = p["cx"], p["cy"], p["rx"], p["ry"]

    img = np.broadcast_to(p["background"], (n, size, size)).copy()
    # lighting gradient on everything
    img += p["light_dx"] * u / 2 + p["light_dy"] * v / 2

    def paint(coverage, value):
        nonlocal img
        img = img * (1 - coverage) + value * coverage

    # hair behind the face, then the face, then the hair over the forehead
    has_hair = p["hair"] >= 0
    hair_top = _cover(_ellipse_sd(u, v, cx, cy - 0.04, rx * 1.1, ry * 1.08), pixel)
    hair_cut = _cover(v - (cy - ry + 2 * ry * p["hairline"]), pixel)  # above the hairline
    paint(hair_top * hair_cut * has_hair, p["hair"])
    face = _cover(_ellipse_sd(u, v, cx, cy, rx, ry), pixel)
    paint(face * np.clip(1 - hair_cut * has_hair, 0, 1), p["skin"])

    feature = p["skin"] - p["feature_dark"]
    stroke = p["stroke"]
    # nose: a soft shadow line
    nose = _segment_distance(u, v, cx, cy - 0.05 * ry, cx + 0.03 * rx, cy + 0.22 * ry)
    paint(0.35 * _cover(nose - stroke * 0.5, pixel), feature)

    # eyes: a light almond with a dark iris, opening scaled by the expression
    eye_y = cy - p["eye_dy"] * ry
    eye_a = 0.15 * rx
    eye_b = 0.075 * rx * p["eye_open"]
    for side in (-1.0, 1.0):
        ex = cx + side * p["eye_dx"] * rx
        almond = _cover(_ellipse_sd(u, v, ex, eye_y, eye_a, eye_b), pixel)
        paint(almond, np.minimum(p["skin"] + 35, 250))
        iris = _cover(_ellipse_sd(u, v, ex, eye_y, 0.075 * rx, 0.075 * rx), pixel)
        paint(almond * iris, feature - 20)
        # brows: a segment above each eye; inner end lowered by brow_angle, both raised by brow_up
        by = eye_y - 0.17 * rx - p["brow_up"] * ry
        inner_x, outer_x = cx + side * 0.12 * rx, cx + side * (p["eye_dx"] + 0.17) * rx
        tilt = p["brow_angle"] * 0.12 * rx
        brow = _segment_distance(u, v, inner_x, by + tilt, outer_x, by - tilt)
        brow_tone = np.where(has_hair, p["hair"], feature)
        paint(_cover(brow - stroke * 0.6, pixel), brow_tone)

    # mouth: a curved line y(x) = my + curve * A * (1/2 - (x/w)^2) + sneer * A * (x/w) on the sneer side,
    # opened by a dark gap between an upper and a lower lip
    my = cy + p["mouth_dy"] * ry
    w = 0.36 * rx * p["width"]
    amp = 0.22 * ry
    x = (u - cx) / w
    inside = np.clip(1 - x * x, 0, None)
    sneer = p["sneer"] * amp * np.clip(x * p["sneer_side"], 0, None) ** 2
    line = my + p["curve"] * amp * (0.5 - x * x) - sneer
    gap = p["open"] * 0.5 * ry * np.sqrt(inside)
    # signed distance to the mouth region: outside horizontally, or above the upper / below the lower lip
    lips = np.maximum(np.abs(u - cx) - w, np.abs(v - line) - gap - stroke * 0.5)
    paint(_cover(lips, pixel), feature)
    opening = np.maximum(np.abs(u - cx) - w * 0.9, np.abs(v - line) - gap + stroke * 0.4)
    paint(_cover(opening, pixel) * (p["open"] > 0.02), np.clip(feature - 45, 5, None))
    return img


def render_faces(seed: int, num_identities: int, size: int, stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Render every identity with all seven emotions. ``stream`` > 0 draws other identities from the same
    seed (the validation split's), leaving stream 0's (train and test) as they were.

    Returns images [7 * num_identities, size, size] uint8 and labels [7 * num_identities] int64 (FER
    order), grouped by identity (identity i occupies rows 7i .. 7i+6).
    """
    rng = np.random.default_rng(seed if stream == 0 else [seed, 4, stream])
    ident = _draw_identities(rng, num_identities)
    names = list(FER_EMOTIONS)
    k = len(names)
    # every identity gets all k expressions; the draws below do not depend on the image size
    rep = {key: np.repeat(val, k) for key, val in ident.items()}
    expr = _expression(names * num_identities, rng)
    total = num_identities * k
    # the reference face for the mean: the same identity with the exact neutral expression
    neutral = {key: np.full(total, value) for key, value in zip(_KEYS, _EXPRESSIONS["neutral"])}
    neutral["sneer_side"] = np.ones(total)
    noise_rng = np.random.default_rng([seed, 2, size] if stream == 0 else [seed, 2, size, stream])
    out = np.empty((total, size, size), dtype=np.uint8)
    for start in range(0, total, _CHUNK):
        sl = slice(start, min(start + _CHUNK, total))
        part_ident = {key: val[sl] for key, val in rep.items()}
        faces = _render(part_ident, {key: val[sl] for key, val in expr.items()}, size)
        reference = _render(part_ident, {key: val[sl] for key, val in neutral.items()}, size)
        faces += (reference.mean(axis=(1, 2)) - faces.mean(axis=(1, 2)))[:, None, None]
        faces += noise_rng.normal(size=faces.shape) * part_ident["noise"][:, None, None]
        out[sl] = np.clip(np.rint(faces), 0, 255).astype(np.uint8)
    labels = np.tile(np.arange(k), num_identities)
    return out, labels


def load_synthetic_faces(image_size: int = 48, num_train: int = 7000, num_test: int = 1400, seed: int = 0,
                         classes=None, shots_per_class=None, num_validation: int | None = None) -> DatasetSplits:
    """The embedded dataset: ``num_train`` / ``num_validation`` (None: as many as test) / ``num_test``
    images (rounded up to a multiple of 7, one identity per 7 images; no identity in two splits),
    grayscale, ``image_size`` px, deterministic for ``seed``; optionally a class subset and a few-shot
    training split."""
    if image_size < 16:
        raise ValueError(f"synthetic_faces needs image_size >= 16, got {image_size}")
    keep = select_classes(FER_EMOTIONS, classes, "synthetic_faces")
    k = len(FER_EMOTIONS)
    n_train_ids = -(-num_train // k)
    n_test_ids = -(-num_test // k)
    images, labels = render_faces(seed, n_train_ids + n_test_ids, image_size)
    cut = n_train_ids * k
    # shuffle within each split so batches mix classes and identities (seeded)
    perm_rng = np.random.default_rng([seed, 3])
    splits = {}
    for split, rows in (("train", np.arange(cut)), ("test", np.arange(cut, len(labels)))):
        rows = rows[perm_rng.permutation(len(rows))]
        splits[split] = keep_classes(torch.from_numpy(images[rows][:, None]).contiguous(),
                                     torch.from_numpy(labels[rows]).long(), FER_EMOTIONS, keep)
    num_validation = num_test if num_validation is None else num_validation
    images, labels = render_faces(seed, -(-num_validation // k), image_size, stream=1)  # identities of its own
    rows = np.random.default_rng([seed, 5]).permutation(len(labels))
    splits["validation"] = keep_classes(torch.from_numpy(images[rows][:, None]).contiguous(),
                                        torch.from_numpy(labels[rows]).long(), FER_EMOTIONS, keep)
    options = {"image_size": image_size, "num_train": num_train, "num_test": num_test, "seed": seed,
               "classes": list(keep), "num_validation": num_validation,
               "validation": "identities of its own, rendered from the seed's second stream"}
    return finish("synthetic_faces", keep, splits, options, shots_per_class, seed, "synthetic_faces")
