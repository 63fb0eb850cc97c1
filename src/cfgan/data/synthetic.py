"""Procedural crack images with exact masks: the embedded default data set.

Each source is a concrete-like texture (smoothed noise, random tint and lighting). A damaged
source gets one to three cracks, random walks of varying width that darken the texture only
where the mask is set, so the mask is exact and the clean texture is the image's undamaged
counterpart (saved too). Everything follows from the seed.

`pores` dark round pores per image, in both classes, are not damage: real surfaces have pores,
stains and shadows, and a map that merely finds dark structure (the `local_contrast` reference)
should not pass for an explanation of the defect.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from .images import save_png


def texture(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.uniform(0.45, 0.7)
    coarse = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), size / 12)
    fine = rng.normal(0, 1, (size, size))
    gray = base + 0.08 * coarse / (coarse.std() + 1e-8) + 0.03 * fine
    yy, xx = np.mgrid[0:size, 0:size] / size
    gray += 0.05 * (rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy)  # uneven lighting
    tint = rng.uniform(0.95, 1.05, size=3)
    return np.clip(gray[..., None] * tint, 0, 1)


def crack_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    for _ in range(rng.integers(1, 4)):
        pos = rng.uniform(0, size, 2)
        angle = rng.uniform(0, 2 * np.pi)
        width = rng.uniform(1.0, 2.5)
        for _ in range(int(size * rng.uniform(0.6, 1.4))):
            angle += rng.normal(0, 0.35)
            pos += np.array([np.cos(angle), np.sin(angle)])
            width = float(np.clip(width + rng.normal(0, 0.15), 0.7, 3.0))
            r = int(np.ceil(width))
            cy, cx = int(pos[0]), int(pos[1])
            ys, xs = np.mgrid[cy - r:cy + r + 1, cx - r:cx + r + 1]
            keep = ((ys - pos[0]) ** 2 + (xs - pos[1]) ** 2 <= width ** 2) & (ys >= 0) & (ys < size) & (xs >= 0) & (xs < size)
            mask[ys[keep], xs[keep]] = True
    return mask


def add_pores(image: np.ndarray, rng: np.random.Generator, n: int, keep_clear: np.ndarray) -> None:
    """Darken n round pores (radius 1.5-3.5 px) in place, away from the crack pixels."""
    size = image.shape[0]
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(n):
        cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(1.5, 3.5)
        spot = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
        image[spot & ~keep_clear] *= rng.uniform(0.25, 0.5)


def generate(out: Path, n_sources: int, size: int, damaged_fraction: float, seed: int, pores: int = 0) -> list[dict]:
    """Write images/, masks/ and counterparts/ under out; return index rows."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "masks", "counterparts"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    n_damaged = int(round(n_sources * damaged_fraction))
    damaged_ids = set(rng.permutation(n_sources)[:n_damaged].tolist())
    for i in range(n_sources):
        clean = texture(rng, size)
        mask = crack_mask(rng, size) if i in damaged_ids else np.zeros((size, size), bool)
        if pores:
            add_pores(clean, np.random.default_rng([seed, i]), pores, ndimage.binary_dilation(mask, iterations=3))
        image = clean.copy()
        darkness = rng.uniform(0.25, 0.5)
        image[mask] *= darkness
        name = f"{i:04d}.png"
        save_png(out / "images" / name, (image * 255).round().astype(np.uint8))
        save_png(out / "masks" / name, mask.astype(np.uint8) * 255)
        save_png(out / "counterparts" / name, (clean * 255).round().astype(np.uint8))
        rows.append({"path": str(out / "images" / name), "label": int(mask.any()),
                     "mask_path": str(out / "masks" / name), "mask_min_value": 128, "source_id": f"synthetic/{i:04d}"})
    return rows
