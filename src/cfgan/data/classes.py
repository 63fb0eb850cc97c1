"""Defect classes of a data set: which ids mean which defect type, read from its layout.

A binary data set (undamaged vs damaged) has one defect class and works exactly as before: its
index and manifest carry no `defect_class` column. A layout names several defect classes in one
of three ways (ids: 0 is always "undamaged", defect types are 1..K):
- `classes: {healthy: 0, bruise: 1, scab: 2}`: class folders; a folder's name names its id.
- `class_prefixes: {bruise: 1, scab: 2}`: beside `classes`, the damaged folders' files take the
  id of the name prefix they start with (the apples' `bruise_*.jpg`, `scab_*.jpg`).
- `mask_classes: {1: inclusion, 2: patches, 3: scratches}`: masks whose pixel values are class
  ids (0 background); a tile takes the class of the defect it holds (see `tile_class`).
- `kind: mvtec, defects: [crack, scratch], defect_classes: true`: MVTec AD's defect folders, ids
  in the order `defects` lists them (listed, since run names are made before any image is read).
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import UserError

NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # a class name becomes part of run names and file names
MIXED = -1  # tile_class of a tile holding two or more defect types


def _checked(names: dict[int, str], key: str) -> dict[int, str]:
    for k, name in names.items():
        if k < 1:
            raise UserError(f"{key}: defect class ids start at 1 (0 is undamaged); got {k} for {name!r}")
        if not NAME.match(name):
            raise UserError(f"{key}: class name {name!r} must be lower-case letters, digits and '_', "
                            f"starting with a letter (it becomes part of run names)")
    return dict(sorted(names.items()))


def _int_key(value, key: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UserError(f"{key}: {value!r} is not a class id (expected an integer)") from None


def defect_classes(layout: dict | None) -> dict[int, str]:
    """{id: name} of the defect classes a layout declares; {1: 'damaged'} for a binary one."""
    layout = layout or {}
    if layout.get("kind") == "mvtec":
        if not layout.get("defect_classes"):
            return {1: "damaged"}
        if not layout.get("defects"):
            raise UserError("layout.defect_classes: true needs layout.defects, the defect folders of test/ in the order "
                            "of their class ids 1..K (e.g. defects: [crack, scratch]): run names are made from them "
                            "before any image is read")
        return _checked({k: str(name) for k, name in enumerate(layout["defects"], 1)}, "layout.defects")
    if layout.get("mask_classes"):
        names = {_int_key(k, "layout.mask_classes"): str(v) for k, v in layout["mask_classes"].items()}
        return _checked(names, "layout.mask_classes")
    if layout.get("class_prefixes"):
        names = {}
        for prefix, k in layout["class_prefixes"].items():
            k = _int_key(k, f"layout.class_prefixes.{prefix}")
            if k in names:
                raise UserError(f"layout.class_prefixes: prefixes {names[k]!r} and {prefix!r} both give class {k}; "
                                f"give each defect type its own id")
            names[k] = str(prefix).rstrip("_-").lower()
        return _checked(names, "layout.class_prefixes")
    folders: dict[int, list[str]] = {}
    for folder, k in (layout.get("classes") or {}).items():
        folders.setdefault(_int_key(k, f"layout.classes.{folder}"), []).append(str(folder).lower())
    defects = {k: "_or_".join(sorted(v)) for k, v in folders.items() if k >= 1}
    if len(defects) <= 1:
        return {1: "damaged"}
    return _checked(defects, "layout.classes")


def is_multiclass(layout: dict | None) -> bool:
    return len(defect_classes(layout)) > 1


def prefix_class(name: str, prefixes: dict) -> int | None:
    """The class id of the first (longest) prefix a file name starts with, or None."""
    for prefix in sorted(prefixes, key=len, reverse=True):
        if name.lower().startswith(str(prefix).lower()):
            return int(prefixes[prefix])
    return None


def tile_class(ids: np.ndarray, classes: list[int], min_fraction: float) -> int | None:
    """The class of a tile of a class-id mask: 0 without defect pixels; k when k is the only class
    covering at least `min_fraction` of the tile; None when no class does (a sliver: skipped, as in
    binary tiling); MIXED when several do (such a tile is dropped: its counterfactual "without this
    defect" would still show the other one, and its class would be ambiguous)."""
    if not ids.any():
        return 0
    n = ids.size
    present = [k for k in classes if (ids == k).sum() / n >= max(min_fraction, 1e-12)]
    return None if not present else present[0] if len(present) == 1 else MIXED


def undeclared_ids(values, classes: list[int]) -> list[int]:
    """Mask values that are neither background (0) nor a declared class id."""
    return sorted(int(v) for v in values if v != 0 and int(v) not in classes)
