"""The raw index: the contract between the acquisition steps (download, ingest, synthetic) and
`split`. One row per source image: path, label (empty: derive from the mask), mask_path,
mask_min_value, source_id."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import UserError
from .images import image_size, list_images, read_mask

COLUMNS = ["path", "label", "mask_path", "mask_min_value", "source_id"]


def _find_mask(mask_dir: Path | None, stem: str) -> Path | None:
    if mask_dir is None:
        return None
    for candidate in sorted(mask_dir.glob(stem + ".*")):
        return candidate
    return None


def index_folder(root: Path, layout: dict) -> pd.DataFrame:
    """Index a folder laid out as params describe; check it thoroughly, naming each bad file."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: data folder not found")
    min_value = int(layout.get("mask_min_value", 1))
    rows, problems = [], []
    if layout["kind"] == "class_folders":
        classes = layout.get("classes") or {}
        if not classes:
            raise UserError(f"layout.classes: expected a mapping sub-folder -> label (0/1) for {root}")
        mask_root = root / layout["masks"] if layout.get("masks") else None
        for folder, label in classes.items():
            cdir = root / folder
            if not cdir.is_dir():
                problems.append(f"{cdir}: class folder missing (layout.classes names it)")
                continue
            files = list_images(cdir)
            if not files:
                problems.append(f"{cdir}: class folder holds no images")
            for f in files:
                mask = _find_mask(mask_root / folder if mask_root else None, f.stem)
                rows.append((f, label, mask))
    else:
        img_dir = root / layout.get("images", "images")
        mask_dir = root / layout.get("masks", "masks")
        for d in (img_dir, mask_dir):
            if not d.is_dir():
                raise UserError(f"{d}: folder missing (layout kind images_masks expects images and masks)")
        files = list_images(img_dir)
        if not files:
            problems.append(f"{img_dir}: holds no images")
        for f in files:
            mask = _find_mask(mask_dir, f.stem)
            if mask is None:
                problems.append(f"{f}: no mask named {f.stem}.* in {mask_dir}")
            rows.append((f, None, mask))
    records = []
    for path, label, mask in rows:
        try:
            size = image_size(path)
            if mask is not None and image_size(mask) != size:
                problems.append(f"{mask}: mask is {image_size(mask)} but its image {path.name} is {size} (width, height)")
        except UserError as exc:
            problems.append(str(exc))
            continue
        if label is None and mask is not None:
            label = int(read_mask(mask, min_value).any())
        records.append({"path": str(path), "label": label, "mask_path": str(mask) if mask else "",
                        "mask_min_value": min_value, "source_id": f"{Path(path).parent.name}/{path.stem}"})
    if problems:
        shown = "\n  - ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise UserError(f"{root}: {len(problems)} problem(s) in the data folder:\n  - {shown}{more}")
    frame = pd.DataFrame.from_records(records, columns=COLUMNS)
    labels = set(frame["label"].dropna().astype(int))
    # With masks, crops get their labels from the masks (crop checks each split has both
    # classes); class folders must hold both classes themselves.
    if layout["kind"] == "class_folders" and labels != {0, 1}:
        raise UserError(f"{root}: found only label(s) {sorted(labels)}; need undamaged (0) and damaged (1) images")
    return frame
