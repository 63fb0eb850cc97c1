"""Tile or resize split images into the crops that training and evaluation read.

`tile`: slide a crop_size window with `stride`; a crop's label comes from its mask (damaged
when at least `damaged_min_fraction` of its pixels are damage, undamaged when none are; crops
in between are ambiguous and skipped), or from its image when there is no mask. `resize`:
the whole image (or a mosaic cell, the index's `box`), resized. Either way crops are resized to
`image_size` and written as PNG; `fit: pad` (default) keeps a non-square picture's aspect ratio
and pads it with black (masks with background), `fit: squash` stretches it to the square,
and `manifest.csv` (path, label, mask_path, source_id, split; paths relative to the manifest)
is the only thing later steps read.

With several defect classes (`classes.py`), the manifest adds `defect_class` (0 undamaged, 1..K)
and `defect_name` (the class's name, which run names carry), and a crop's mask holds its own class's pixels only. A tile of a class-id mask takes the one class
covering at least `damaged_min_fraction` of it; a tile where two or more classes do is dropped
(counted in the step's log), a tile with only slivers is skipped as in binary tiling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from ..errors import UserError
from .classes import MIXED, tile_class
from .images import read_mask, read_mask_values, read_rgb, save_png
from .mosaic import cut

MANIFEST_COLUMNS = ["path", "label", "mask_path", "source_id", "split"]

# A damaged crop's defect is too small to learn when, at the training resolution, it keeps fewer
# than this many pixels or is thinner than one pixel (a bilinear resize then averages it away
# from the image, whatever the nearest-neighbour mask keeps).
MIN_DEFECT_PX = 16
MIN_DEFECT_WIDTH_PX = 1.0


def defect_size(mask: np.ndarray) -> tuple[int, float]:
    """(pixels, width in px) of a binary mask's defect; width ~ 2 x area / perimeter, which is a
    line's thickness and about half a blob's diameter."""
    m = np.asarray(mask, bool)
    area = int(m.sum())
    if area == 0:
        return 0, 0.0
    padded = np.pad(m, 1)
    inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    perimeter = max(int((m & ~inner).sum()), 1)  # boundary pixels
    return area, min(2 * area / perimeter, float(min(m.shape)))


def too_small_warning(sizes: list[tuple[int, float, float]], n_damaged: int, cfg: dict) -> str | None:
    """The crop step's warning when damaged crops' defects are too small to learn, and the tiling
    that would keep them. `sizes`: (source pixels, source width, scale to image_size) per damaged crop."""
    size = cfg["image_size"]
    small = [(a, w, f) for a, w, f in sizes if a * f * f < MIN_DEFECT_PX or w * f < MIN_DEFECT_WIDTH_PX]
    if not small:
        return None
    area = float(np.median([a for a, _, _ in small]))
    width = float(np.median([w for _, w, _ in small]))
    crop = int(size * min(width / MIN_DEFECT_WIDTH_PX, np.sqrt(area / MIN_DEFECT_PX)) // 8 * 8)
    head = (f"WARNING crop: {len(small)} of {n_damaged} damaged crops ({len(small) / max(n_damaged, 1):.0%}) keep a defect "
            f"of fewer than {MIN_DEFECT_PX} px or thinner than {MIN_DEFECT_WIDTH_PX:g} px at image_size {size} "
            f"(their defects: median {area:.0f} px, {width:.1f} px wide in the source image): too small to learn")
    if crop >= size:
        return head + (f". A tiling keeps them: crop: {{mode: tile, crop_size: {crop}, stride: {max(crop // 2, 1)}, "
                       f"image_size: {size}}}")
    return head + (f", even tiled at native resolution (crop_size = image_size = {size}); a larger image_size, "
                   "or images of a higher resolution, would be needed")


def _resize(array: np.ndarray, size: int, is_mask: bool, fit: str = "squash") -> np.ndarray:
    h, w = array.shape[:2]
    if h == size and w == size:
        return array
    resample = Image.NEAREST if is_mask else Image.BILINEAR
    if fit == "squash" or h == w:
        return np.asarray(Image.fromarray(array).resize((size, size), resample))
    scale = size / max(h, w)  # the long side fills the square; the short side is padded
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = np.asarray(Image.fromarray(array).resize((nw, nh), resample))
    out = np.zeros((size, size) + array.shape[2:], array.dtype)
    y, x = (size - nh) // 2, (size - nw) // 2
    out[y:y + nh, x:x + nw] = small
    return out


class _Reader:
    """Reads each source file once while consecutive rows share it (a mosaic's cells)."""

    def __init__(self):
        self.path, self.image = None, None

    def __call__(self, path: str, box: str) -> np.ndarray:
        if path != self.path:
            self.path, self.image = path, read_rgb(path)
        return cut(self.image, box)


def _windows(h: int, w: int, crop: int, stride: int) -> list[tuple[int, int]]:
    if h < crop or w < crop:
        return []
    ys = list(range(0, h - crop + 1, stride))
    xs = list(range(0, w - crop + 1, stride))
    return [(y, x) for y in ys for x in xs]


def _declared(split_index: pd.DataFrame, mask_classes: dict | None) -> dict[int, str]:
    """{id: name} of the defect classes every split must hold: the class-id masks' or the folders' ones."""
    if mask_classes:
        return {int(k): str(v) for k, v in sorted(mask_classes.items(), key=lambda kv: int(kv[0]))}
    known = split_index[split_index["defect_class"].astype(str) != ""]
    pairs = {int(k): str(n) for k, n in zip(known["defect_class"], known["defect_name"])}
    return {k: pairs[k] for k in sorted(pairs) if k > 0}


def crop_split(split_index: pd.DataFrame, out_dir: Path, cfg: dict, seed: int,
               mask_classes: dict | None = None) -> pd.DataFrame:
    """Write crops under out_dir/{split}/ and return the manifest rows (paths relative to out_dir's parent).
    `mask_classes` ({id: name}): the masks are class-id maps, split per tile by `tile_class`."""
    rng = np.random.default_rng(seed)
    size = cfg["image_size"]
    fit = cfg.get("fit", "pad")
    min_fraction = cfg.get("damaged_min_fraction", 0.0)
    multiclass = "defect_class" in split_index.columns
    names = _declared(split_index, mask_classes) if multiclass else {1: "damaged"}
    classes = list(names)
    read = _Reader()
    rows, mixed, sizes = [], 0, []
    for split in ("train", "val", "test"):
        (out_dir / "crops" / split).mkdir(parents=True, exist_ok=True)
    for rec in tqdm(split_index.itertuples(index=False), total=len(split_index), desc="crop", unit="img"):
        box = getattr(rec, "box", "")
        image = read(rec.path, box if isinstance(box, str) else "")
        has_mask = isinstance(rec.mask_path, str) and rec.mask_path != ""
        if has_mask:
            mask = read_mask_values(rec.mask_path) if mask_classes else read_mask(rec.mask_path, int(rec.mask_min_value))
        else:
            mask = None
        if mask is not None and mask.shape != image.shape[:2]:
            raise UserError(f"{rec.mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but {rec.path} is "
                            f"{image.shape[1]}x{image.shape[0]} (width x height)")
        stem = str(rec.source_id).replace("/", "_")
        own = int(rec.defect_class) if multiclass and str(rec.defect_class) != "" else 1  # a folder's class

        def piece(img, m, label):
            """(crop, its binary mask, label, defect class), or None for a skipped or dropped tile."""
            nonlocal mixed
            if mask_classes and m is not None:
                k = tile_class(m, classes, min_fraction)
                mixed += k == MIXED
                return None if k is None or k == MIXED else (img, m == k, int(k > 0), k)
            return img, m, label, own if label else 0

        if cfg["mode"] == "resize":
            pieces = [piece(image, mask, int(rec.label))]
        else:
            crop = cfg.get("crop_size", size)
            wins = _windows(*image.shape[:2], crop, cfg.get("stride", crop))
            if not wins:
                raise UserError(f"{rec.path}: image {image.shape[1]}x{image.shape[0]} is smaller than crop_size {crop}")
            pieces = []
            for y, x in wins:
                m = mask[y:y + crop, x:x + crop] if mask is not None else None
                if m is None or mask_classes:
                    label = int(rec.label)  # (class-id masks: piece() decides)
                else:
                    frac = m.mean()
                    if frac == 0:
                        label = 0
                    elif frac >= min_fraction:
                        label = 1
                    else:
                        continue  # a sliver of damage: neither class, skipped
                pieces.append(piece(image[y:y + crop, x:x + crop], m, label))
        pieces = [p for p in pieces if p is not None]  # tiles dropped or skipped by piece()
        limit = cfg.get("max_crops_per_image")  # (resize mode: one piece, never over the limit)
        if limit and len(pieces) > limit:
            keep = sorted(rng.choice(len(pieces), limit, replace=False))
            pieces = [pieces[i] for i in keep]
        for k, (img, m, label, defect) in enumerate(pieces):
            if m is not None and label:
                sizes.append((*defect_size(m), size / max(m.shape)))
            rel = Path("crops") / rec.split / f"{stem}_{k:03d}.png"
            save_png(out_dir / rel, _resize(img, size, False, fit))
            mask_rel = ""
            if m is not None:
                mask_rel = str(Path("crops") / rec.split / f"{stem}_{k:03d}_mask.png")
                save_png(out_dir / mask_rel, _resize(m.astype(np.uint8) * 255, size, True, fit))
            rows.append({"path": str(rel), "label": label, "mask_path": mask_rel,
                         "source_id": rec.source_id, "split": rec.split, "defect_class": defect,
                         "defect_name": names.get(defect, "undamaged")})
    extra = ["defect_class", "defect_name"]
    manifest = pd.DataFrame.from_records(rows, columns=MANIFEST_COLUMNS + extra)[MANIFEST_COLUMNS + (extra if multiclass else [])]
    warning = too_small_warning(sizes, len(sizes), cfg)
    if warning:
        print(warning)  # before any training: the step's log, and the terminal under Snakemake
    if mixed:
        print(f"crop: dropped {mixed} tiles holding two or more defect classes (each over damaged_min_fraction)")
    for split in ("train", "val", "test"):
        labels = set(manifest.loc[manifest["split"] == split, "label"])
        if labels != {0, 1}:
            raise UserError(f"crop: the {split} split has label(s) {sorted(labels)} only after cropping; "
                            f"need both classes (more source images, or a different crop_size/damaged_min_fraction)")
        if multiclass:
            missing = set(classes) - set(manifest.loc[manifest["split"] == split, "defect_class"])
            if missing:
                raise UserError(f"crop: the {split} split holds no crop of defect class(es) {sorted(missing)}; every "
                                f"class needs crops in train, val and test (more source images, or a smaller "
                                f"damaged_min_fraction)")
    return manifest
