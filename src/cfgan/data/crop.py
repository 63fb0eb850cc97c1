"""Tile or resize split images into the crops that training and evaluation read.

`tile`: slide a crop_size window with `stride`; a crop's label comes from its mask (damaged
when at least `damaged_min_fraction` of its pixels are damage, undamaged when none are; crops
in between are ambiguous and skipped), or from its image when there is no mask; a photo smaller
than crop_size is first made one tile large (`small_images: pad` mirrors it outward, `resize`
scales it up; counted in the step's log). `resize`:
the whole image (or a mosaic cell, the index's `box`), resized. Either way crops are resized to
`image_size` and written as PNG; `fit: pad` (default) keeps a non-square picture's aspect ratio
and pads it with black (masks with background), `fit: squash` stretches it to the square,
and `manifest.csv` (path, label, mask_path, source_id, split; paths relative to the manifest)
is the only thing later steps read.

With several defect classes (`classes.py`), the manifest adds `defect_class` (0 undamaged, 1..K)
and `defect_name` (the class's name, which run names carry), and a crop's mask holds its own class's pixels only. A tile of a class-id mask takes the one class
covering at least `damaged_min_fraction` of it; a tile where two or more classes do is dropped
(counted in the step's log), a tile with only slivers is skipped as in binary tiling.

Before writing a crop, the step surveys the damaged crops' defects at image_size (the masks only).
When some are too small to learn, it tries tilings of crop_size from image_size up on the same
images and names the one that keeps the most of them; when more than half are too small, it stops
with that advice (exit 2) unless `allow_small_defects: true`. Its warnings (this, masks that
disagree with their class, tiles and images dropped) go to the terminal, the log and
`warnings.json` beside the manifest (`data_warnings.py`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..errors import UserError
from ..progress import progress
from .classes import MIXED, tile_class
from .data_warnings import Collected
from .images import read_mask, read_mask_values, read_rgb, save_png, upright_size
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


SMALL_SHARE_STOP = 0.5  # the crop step stops (exit 2) when more of the damaged crops than this are too small
NEAR_BEST = 0.05       # of the tilings tried, the largest crop_size within this share of the best one


def _too_small(area: float, width: float, scale: float) -> bool:
    return area * scale * scale < MIN_DEFECT_PX or width * scale < MIN_DEFECT_WIDTH_PX


def _round_up(x: float) -> float:
    """Up to two significant digits: 0.015625 -> 0.016."""
    digits = 1 - int(np.floor(np.log10(x)))
    return float(np.ceil(x * 10 ** digits) / 10 ** digits)


def _flow(cfg: dict) -> str:
    """A crop block as a YAML flow mapping, to paste under datasets.<name>.crop."""
    return "{" + ", ".join(f"{k}: {v}" for k, v in cfg.items()) + "}"


def fit_small(array: np.ndarray, crop: int, how: str = "pad", is_mask: bool = False) -> np.ndarray:
    """A photo (or its mask) with a side under crop_size, made one tile large on that side: `pad`
    mirrors it outward (reflect; the mask is mirrored with it), `resize` scales it up, aspect kept,
    until its short side is crop_size. A photo that is large enough comes back as it is."""
    h, w = array.shape[:2]
    if h >= crop and w >= crop:
        return array
    if how == "resize":
        scale = crop / min(h, w)
        size = (max(crop, round(w * scale)), max(crop, round(h * scale)))
        return np.asarray(Image.fromarray(array).resize(size, Image.NEAREST if is_mask else Image.BILINEAR))
    dy, dx = max(crop - h, 0), max(crop - w, 0)
    pad = [(dy // 2, dy - dy // 2), (dx // 2, dx - dx // 2)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad, mode="reflect" if min(h, w) > 1 else "edge")


def _crop_label(m, rec_label: int, own: int, min_fraction: float, classes: list[int] | None, tiled: bool):
    """(label, defect class, the crop's binary mask or None) of one tile (`tiled`) or whole image cut
    from mask `m`; None: a sliver, skipped; MIXED: two classes, dropped. The one rule both the
    crops and the survey of defect sizes follow."""
    if m is None:
        return rec_label, own if rec_label else 0, None
    if classes is not None:  # a class-id mask decides per tile
        k = tile_class(m, classes, min_fraction)
        # an undamaged tile (k = 0) has an empty mask, not `m == 0` (its every pixel)
        return k if k is None or k == MIXED else (int(k > 0), k, m == k if k else np.zeros_like(m, dtype=bool))
    label = rec_label
    if tiled:
        frac = m.mean()
        if frac == 0:
            label = 0
        elif frac >= min_fraction:
            label = 1
        else:
            return None
    return label, own if label else 0, m


def _survey(split_index: pd.DataFrame, tilings: list[dict], mask_classes: dict | None, classes: list[int],
            min_value_of) -> list[dict]:
    """For each crop block in `tilings`, on these images (masks read once for all): how many damaged
    crops it makes, the (source pixels, source width) of those whose defect is too small at its
    image_size, how many photos are smaller than its crop_size, and each photo's long side. Counts
    every crop, before max_crops_per_image samples them."""
    out = [{"damaged": 0, "small": [], "small_photos": 0, "sides": []} for _ in tilings]
    multiclass = "defect_class" in split_index.columns
    for rec in split_index.itertuples(index=False):
        has_mask = isinstance(rec.mask_path, str) and rec.mask_path != ""
        box = getattr(rec, "box", "")
        box = box if isinstance(box, str) else ""
        if has_mask:
            mask = read_mask_values(rec.mask_path) if mask_classes else read_mask(rec.mask_path, min_value_of(rec))
            h, w = mask.shape
        elif box:
            w, h = (int(v) for v in box.split(",")[2:])
        else:
            w, h = upright_size(rec.path)
        for cfg, res in zip(tilings, out):
            crop = cfg.get("crop_size", cfg["image_size"])
            res["small_photos"] += cfg["mode"] == "tile" and (h < crop or w < crop)
            res["sides"].append(max(h, w))
        if not has_mask or not mask.any():
            continue
        rec_label = int(rec.label) if str(rec.label) != "" else int(mask.any())
        own = int(rec.defect_class) if multiclass and str(rec.defect_class) != "" else 1
        for cfg, res in zip(tilings, out):
            size = cfg["image_size"]
            min_fraction = cfg.get("damaged_min_fraction", 0.0)
            tiled = cfg["mode"] == "tile"
            if tiled:
                crop = cfg.get("crop_size", size)
                m = fit_small(mask, crop, cfg.get("small_images", "pad"), True)
                wins = np.array(_windows(*m.shape, crop, cfg.get("stride", crop)), int).reshape(-1, 2)
                ii = np.pad((m != 0).cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # summed-area table of defect pixels
                y, x = wins[:, 0], wins[:, 1]
                touched = (ii[y + crop, x + crop] - ii[y, x + crop] - ii[y + crop, x] + ii[y, x]) > 0
                pieces = [m[y:y + crop, x:x + crop] for y, x in wins[touched]]  # (the others are undamaged tiles)
                scale = size / crop
            else:
                pieces, scale = [mask], size / max(h, w)
            for piece in pieces:
                got = _crop_label(piece, rec_label, own, min_fraction, list(classes) if mask_classes else None, tiled)
                if got is None or got == MIXED or not got[0] or got[2] is None or not got[2].any():
                    continue
                res["damaged"] += 1
                area, width = defect_size(got[2])
                if _too_small(area, width, scale):
                    res["small"].append((area, width))
    return out


def _share(res: dict) -> float:
    return len(res["small"]) / res["damaged"] if res["damaged"] else 0.0


def _candidates(cfg: dict, photo_side: float) -> list[int]:
    """crop_sizes to try: from image_size (native resolution) up by sqrt(2) steps, below what the
    crop block cuts now (its crop_size, or a resized photo's long side)."""
    size = cfg["image_size"]
    top = cfg.get("crop_size", size) if cfg["mode"] == "tile" else photo_side
    out, c = [], float(size)
    while round(c / 8) * 8 < top and len(out) < 8:
        crop = max(size, int(round(c / 8) * 8))
        if crop not in out:
            out.append(crop)
        c *= np.sqrt(2)
    return out


def check_defect_sizes(split_index: pd.DataFrame, cfg: dict, mask_classes: dict | None, classes: list[int],
                       dataset: str = "<name>") -> dict | None:
    """The survey of defect sizes under `cfg`, and when some are too small to learn, the tiling (tried
    on the same images) that keeps the most of them. None: no damaged crop with a mask, or none too small.
    Else {"message", "share", "n_damaged", "n_small", "suggestion" (a crop block, or None), ...}."""
    if not (split_index["mask_path"].astype(str) != "").any():
        return None
    min_value_of = (lambda rec: int(rec.mask_min_value))
    size = cfg["image_size"]
    [now] = _survey(split_index, [cfg], mask_classes, classes, min_value_of)
    if not now["small"]:
        return None
    share = _share(now)
    area = float(np.median([a for a, _ in now["small"]]))
    width = float(np.median([w for _, w in now["small"]]))
    head = (f"{len(now['small'])} of {now['damaged']} damaged crops ({share:.0%}) keep a defect of fewer than "
            f"{MIN_DEFECT_PX} px or thinner than {MIN_DEFECT_WIDTH_PX:g} px at image_size {size} (their defects: "
            f"median {area:.0f} px, {width:.1f} px wide in the source image): too small to learn")
    crops = _candidates(cfg, float(np.median(now["sides"])))
    how = cfg.get("small_images", "pad")
    min_fraction = max(cfg.get("damaged_min_fraction", 0.0) if cfg["mode"] == "tile" else 0.0,
                       _round_up(MIN_DEFECT_PX / size ** 2))
    tries = [{"mode": "tile", "crop_size": c, "stride": max(c // 2, 1), "image_size": size,
              "damaged_min_fraction": min_fraction} | ({"small_images": how} if how != "pad" else {}) for c in crops]
    results = _survey(split_index, tries, mask_classes, classes, min_value_of) if tries else []
    tried = [(t, r, _share(r)) for t, r in zip(tries, results) if r["damaged"] and _share(r) < share]
    found = {"message": head, "share": round(share, 4), "n_damaged": now["damaged"], "n_small": len(now["small"]),
             "suggestion": None, "suggested_share": None,
             "tried": {t["crop_size"]: round(_share(r), 4) for t, r in zip(tries, results)}}
    if not tried:
        found["message"] = head + (f"; no tiling with crop_size from {size} (native resolution) up keeps more of them "
                                   f"at image_size {size}: a larger image_size, or photos of a higher resolution, "
                                   "would be needed")
        return found
    best = min(s for _, _, s in tried)
    tiling, res, new = max(((t, r, s) for t, r, s in tried if s <= best + NEAR_BEST), key=lambda x: x[0]["crop_size"])
    note = (f"; {res['small_photos']} photos smaller than crop_size {tiling['crop_size']} are "
            f"{'scaled up' if how == 'resize' else 'padded (mirrored)'} to it (crop.small_images: {how})"
            if res["small_photos"] else "")
    found.update(suggestion=tiling, suggested_share=round(new, 4),
                 message=head + f". A tiling keeps more of them: crop: {_flow(tiling)} (tried on these images: "
                                f"{new:.0%} of its {res['damaged']} damaged crops too small, against {share:.0%} now{note})")
    return found


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
               mask_classes: dict | None = None, dataset: str = "<name>") -> pd.DataFrame:
    """Write crops under out_dir/{split}/ and the data warnings to out_dir/warnings.json; return the
    manifest rows (paths relative to out_dir's parent). `mask_classes` ({id: name}): the masks are
    class-id maps, split per tile by `tile_class`. Stops (UserError, before writing a crop) when more
    than half of the damaged crops keep a defect too small to learn, unless `allow_small_defects`."""
    rng = np.random.default_rng(seed)
    size = cfg["image_size"]
    fit = cfg.get("fit", "pad")
    min_fraction = cfg.get("damaged_min_fraction", 0.0)
    how = cfg.get("small_images", "pad")
    multiclass = "defect_class" in split_index.columns
    names = _declared(split_index, mask_classes) if multiclass else {1: "damaged"}
    classes = list(names)
    by_mask = classes if mask_classes else None
    warnings = Collected("crop")
    sizes = check_defect_sizes(split_index, cfg, mask_classes, classes, dataset)
    if sizes and sizes["share"] > SMALL_SHARE_STOP and not cfg.get("allow_small_defects", False):
        fix = (f"put the tiling above under datasets.{dataset}.crop (other keys as you like), or "
               if sizes["suggestion"] else "")
        raise UserError(f"{sizes['message']}.\n  More than half of the damaged crops: stopped before writing any crop. "
                        f"To go on, {fix}set datasets.{dataset}.crop.allow_small_defects: true to crop as it is")
    if sizes:
        warnings.add("small_defects", sizes["message"], **{k: v for k, v in sizes.items() if k != "message"})
    read = _Reader()
    rows, mixed, small_photos, conflicts, no_crop = [], 0, 0, [], []
    for split in ("train", "val", "test"):
        (out_dir / "crops" / split).mkdir(parents=True, exist_ok=True)
    for rec in progress(split_index.itertuples(index=False), total=len(split_index), desc="crop", unit="img"):
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
        if mask is not None and str(rec.label) != "" and int(rec.label) != int(mask.any()):
            conflicts.append(rec.path)  # a folder's class against its mask: the mask labels the tiles
        stem = str(rec.source_id).replace("/", "_")
        own = int(rec.defect_class) if multiclass and str(rec.defect_class) != "" else 1  # a folder's class

        if cfg["mode"] == "resize":
            cuts = [(image, mask)]
        else:
            crop = cfg.get("crop_size", size)
            if image.shape[0] < crop or image.shape[1] < crop:  # a photo under one tile: made one tile large
                small_photos += 1
                image = fit_small(image, crop, how)
                mask = None if mask is None else fit_small(mask, crop, how, is_mask=True)
            cuts = [(image[y:y + crop, x:x + crop], None if mask is None else mask[y:y + crop, x:x + crop])
                    for y, x in _windows(*image.shape[:2], crop, cfg.get("stride", crop))]
        pieces = []
        for img, m in cuts:
            got = _crop_label(m, int(rec.label), own, min_fraction, by_mask, cfg["mode"] == "tile")
            mixed += got == MIXED
            if got is not None and got != MIXED:  # a sliver is skipped, a tile of two classes dropped
                label, defect, binary = got
                pieces.append((img, binary, label, defect))
        if not pieces:
            no_crop.append(str(rec.source_id))
        limit = cfg.get("max_crops_per_image")  # (resize mode: one piece, never over the limit)
        if limit and len(pieces) > limit:
            keep = sorted(rng.choice(len(pieces), limit, replace=False))
            pieces = [pieces[i] for i in keep]
        for k, (img, m, label, defect) in enumerate(pieces):
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
    if small_photos:
        print(f"crop: {small_photos} photos smaller than crop_size {cfg.get('crop_size', size)} were "
              f"{'scaled up' if how == 'resize' else 'padded (mirrored)'} to it (crop.small_images: {how})")
    if conflicts:
        warnings.add("mask_class_conflict", f"{len(conflicts)} images whose mask disagrees with their folder's class "
                     f"(their crops take the mask's label): {_some(conflicts)}", count=len(conflicts), files=conflicts[:20])
    if mixed:
        warnings.add("mixed_tiles", f"dropped {mixed} tiles holding two or more defect classes (each over "
                     "damaged_min_fraction)", count=int(mixed))
    if no_crop:
        warnings.add("images_dropped", f"{len(no_crop)} source images gave no crop (each of their tiles a sliver "
                     f"under damaged_min_fraction, or of two classes): {_some(no_crop)}", count=len(no_crop),
                     files=no_crop[:20])
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
    warnings.write(out_dir)
    return manifest


def _some(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f", ... ({len(names) - shown} more)" if len(names) > shown else "")
