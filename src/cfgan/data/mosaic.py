"""Mosaic layout: many objects tiled into one large image per file (the CASC IFW apples).

CASC IFW clips each apple to a 120 x 120 window and assembles the apples of one day into two
mosaics, one of damaged and one of healthy apples, named by date, cultivar and condition
(`20090701_fuji_...`). Each non-blank cell becomes one row of the index (`box` = x,y,w,h
inside the mosaic) and one source for the split: the paper splits apples, not days. (Keeping
a day's apples together would test transfer to unseen days, a stricter question the paper
does not ask; both classes of a day share its light and camera, so it would not remove a
label shortcut either.) Blank cells (the padding that fills a mosaic's last row) are those
whose pixels barely vary (standard deviation below `blank_max_std`, on 0-255), measured on the
cell's interior: in a JPEG mosaic a blank cell's border picks up ringing from its neighbours.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import UserError
from .images import list_images, read_rgb

DEFAULT_PATTERN = r"(?P<date>\d{8})_(?P<cultivar>.+)_(?P<condition>[^_]+)"


def scan_mosaics(root: Path, layout: dict) -> tuple[list[dict], list[str], list[str]]:
    """(index records, problems, notes) for the mosaics under root/<folder> for each of layout.folders."""
    cell = int(layout.get("cell", 120))
    pattern = re.compile(layout.get("pattern", DEFAULT_PATTERN), re.IGNORECASE)
    conditions = {k.lower(): v for k, v in (layout.get("conditions") or {}).items()}
    if set(conditions.values()) != {0, 1}:
        raise UserError(f"layout.conditions: expected the condition words of the file names with their labels, "
                        f"both classes (e.g. {{healthy: 0, ifw: 1}}), got {layout.get('conditions')!r}")
    blank_std = float(layout.get("blank_max_std", 4.0))
    inset = cell // 8
    records, problems, notes = [], [], []
    for folder in layout.get("folders") or ["."]:
        fdir = root / str(folder)
        if not fdir.is_dir():
            problems.append(f"{fdir}: folder missing (layout.folders names it)")
            continue
        files = list_images(fdir)
        if not files:
            problems.append(f"{fdir}: holds no mosaic images")
        counts: Counter = Counter()
        for path in files:
            m = pattern.fullmatch(path.stem)
            if not m:
                problems.append(f"{path}: name does not match layout.pattern {pattern.pattern!r} "
                                f"(expected date_cultivar_condition, e.g. 20090701_fuji_healthy)")
                continue
            condition = m.group("condition").lower()
            if condition not in conditions:
                problems.append(f"{path}: condition {condition!r} is not in layout.conditions "
                                f"({', '.join(conditions) or 'empty'}); add it with its label (0 healthy, 1 damaged)")
                continue
            try:
                image = read_rgb(path)
            except UserError as exc:  # names the file
                problems.append(str(exc))
                continue
            h, w = image.shape[:2]
            if h % cell or w % cell:
                problems.append(f"{path}: {w}x{h} is not a whole number of {cell} px cells (layout.cell)")
                continue
            label = int(conditions[condition])
            for r in range(h // cell):
                for c in range(w // cell):
                    tile = image[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell]
                    if tile[inset:cell - inset, inset:cell - inset].std() < blank_std:
                        counts["blank"] += 1
                        continue
                    counts[label] += 1
                    records.append({"path": str(path), "label": label, "mask_path": "", "mask_min_value": 1,
                                    "source_id": f"{folder}/{path.stem}/r{r:02d}c{c:02d}",
                                    "box": f"{c * cell},{r * cell},{cell},{cell}",
                                    "date": m.group("date"), "cultivar": m.group("cultivar").lower()})
        total = counts[0] + counts[1]
        notes.append(f"{fdir}: {len(files)} mosaic(s), {total} apples ({counts[1]} damaged, {counts[0]} healthy), "
                     f"{counts['blank']} blank cell(s) skipped")
        expected = (layout.get("expected") or {}).get(str(folder))
        if expected and (total, counts[1]) != (expected["objects"], expected["damaged"]):
            notes.append(f"  note: the publisher counts {expected['objects']} apples ({expected['damaged']} damaged) "
                         f"for {folder}; check layout.cell and blank_max_std, or whether files are missing")
    return records, problems, notes


def cut(image: np.ndarray, box: str) -> np.ndarray:
    """The x,y,w,h box of an index row ('' = the whole image)."""
    if not box:
        return image
    x, y, w, h = (int(v) for v in box.split(","))
    return image[y:y + h, x:x + w]
