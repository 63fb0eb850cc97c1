"""The raw index: the contract between the acquisition steps (download, ingest, synthetic) and
`split`. One row per source image: path, label (empty: derive from the mask), mask_path,
mask_min_value, source_id, box (x,y,w,h inside `path` for mosaics; empty: the whole image).
Layouts may add columns (a mosaic's date and cultivar, a download's archive checksum); split
and crop carry them along. A data set with several defect classes (`classes.py`) adds
`defect_class` and `defect_name`: the image's class id and name from its folder or file-name
prefix ("undamaged" for 0), empty where its class-id mask decides per tile.

`scan` checks the folder thoroughly, naming each bad file, and returns notes for the user:
what it found, which files it paired or left unpaired, the range of mask values and how the
threshold `mask_min_value` reads them, and which images it converted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from .classes import defect_classes, prefix_class, undeclared_ids
from .images import describe_mode, probe, read_mask_values
from .layouts import Found, parts, scan_folder
from .mosaic import scan_mosaics

COLUMNS = ["path", "label", "mask_path", "mask_min_value", "source_id", "box"]


# notes that are warnings (files left out, labels in doubt): the acquisition steps also put them on the terminal
WARNING_NOTES = ("masks without an image (ignored)", "images whose mask disagrees with their folder's class",
                 "files that are not images (ignored)")


@dataclass
class Scan:
    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return [n for n in self.notes if n.startswith(WARNING_NOTES)]


def index_folder(root: Path, layout: dict) -> pd.DataFrame:
    """Index a folder laid out as params describe; check it thoroughly, naming each bad file."""
    return scan(root, layout).frame


def _raise(root: Path, problems: list[str]) -> None:
    if problems:
        shown = "\n  - ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise UserError(f"{root}: {len(problems)} problem(s) in the data folder:\n  - {shown}{more}")


def _listing(title: str, files: list[Path], shown: int = 5) -> str:
    names = ", ".join(str(f) for f in files[:shown]) + (f", ... ({len(files) - shown} more)" if len(files) > shown else "")
    return f"{title}: {len(files)} ({names})"


def scan(root: Path, layout: dict) -> Scan:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: data folder not found")
    if layout["kind"] == "mosaic":
        records, problems, notes = scan_mosaics(root, layout)
        _raise(root, problems)
        return Scan(_frame(records, root, layout), notes)
    min_value = int(layout.get("mask_min_value", 1))
    defects = defect_classes(layout)  # {id: name}; checks the class names and ids
    multiclass = len(defects) > 1
    class_masks = bool(layout.get("mask_classes"))
    prefixes = layout.get("class_prefixes") or {}
    if class_masks and min_value != 1:
        raise UserError(f"{root}: layout.mask_classes and layout.mask_min_value {min_value}: class-id masks read every "
                        f"non-zero value as a defect of that class; drop mask_min_value")
    if prefixes and layout["kind"] != "class_folders":
        raise UserError(f"{root}: layout.class_prefixes applies to class_folders layouts (kind is {layout['kind']!r})")
    found, extra, problems = Found(), [], []
    rows: list[tuple[Path, int | None, Path | None]] = []  # (image, its folder's class or None, mask or None)
    for part in parts(root, layout):
        folder, masks, mask_dir = part.folder, part.masks, part.mask_dir
        if not folder.is_dir():
            problems.append(f"{folder}: {part.what} missing ({part.named_by} names it)")
            continue
        if mask_dir is not None and not mask_dir.is_dir():
            if not part.optional_mask_dir:
                problems.append(f"{mask_dir}: mask folder missing ({part.masks_named_by})")
                continue
            masks = None
        piece = scan_folder(folder, masks, mask_dir if masks else None, part.suffix, part.extension)
        if masks is None and part.masks is not None:
            extra.append(f"{mask_dir}: no such folder, so the {len(piece.pairs)} images of {folder.name}/ have no masks")
        if not piece.pairs and not piece.problems:
            problems.append(f"{folder}: {part.what + ' ' if part.what else ''}holds no images")
        problems += piece.problems
        if part.required:  # one rule for every layout whose damaged images must come with a mask
            where = mask_dir or folder
            problems += [f"{f}: no mask named {f.stem}{part.suffix}.* in {where} (expected "
                         f"{where / (f.stem + part.suffix + '.png')} or another image type){part.hint}"
                         for f in piece.unpaired_images]
        else:
            found.unpaired_images.extend(piece.unpaired_images)
        found.unpaired_masks.extend(piece.unpaired_masks)
        found.other_files.extend(piece.other_files)
        rows += [(image, part.label, mask) for image, mask in piece.pairs]

    records, modes, orientations, values = [], Counter(), Counter(), Counter()
    for path, label, mask in rows:
        defect = "" if label is None else label  # a folder's class id; "" for images_masks: the mask decides
        if label is not None and label > 0 and prefixes:
            defect = prefix_class(path.name, prefixes)
            if defect is None:
                problems.append(f"{path}: its name starts with none of layout.class_prefixes "
                                f"({', '.join(map(str, prefixes))}); rename it or move it out of {path.parent.name}/")
                continue
        if label is not None:
            label = int(label > 0)
        try:
            info = probe(path)
            size = (info.width, info.height)
            v = read_mask_values(mask) if mask is not None else None  # decoded once: size, values, label
            if v is not None and (v.shape[1], v.shape[0]) != size:
                problems.append(f"{mask}: mask is {(v.shape[1], v.shape[0])} but its image {path.name} is {size} "
                                f"(width, height, as displayed after EXIF orientation; the image: {path})")
                continue
        except UserError as exc:
            problems.append(str(exc))
            continue
        modes[describe_mode(info.mode)] += 1
        orientations[info.orientation] += 1
        if v is not None:
            found_values = dict(zip(*np.unique(v, return_counts=True)))
            undeclared = undeclared_ids(found_values, list(defects)) if class_masks else []
            if undeclared:
                problems.append(f"{mask}: value(s) {', '.join(map(str, undeclared))} not declared in layout.mask_classes "
                                f"(declared: {', '.join(f'{k} {n}' for k, n in defects.items())}; 0 is background)")
                continue
            values.update(found_values)
            damaged = bool((v >= min_value).any())
            if label is None:
                label = int(damaged)
            elif label != int(damaged):
                found.label_conflicts.append(path)
        record = {"path": str(path), "label": label, "mask_path": str(mask) if mask else "",
                  "mask_min_value": min_value, "source_id": _source_id(path, root)}
        if multiclass:
            mask_decides = class_masks and v is not None
            record["defect_class"] = "" if mask_decides else defect
            record["defect_name"] = "" if mask_decides else defects.get(defect, "undamaged")
        records.append(record)
    _raise(root, problems)
    frame = _frame(records, root, layout)
    notes = _notes(frame, found, modes, orientations, values, min_value) + extra
    if multiclass:
        notes.append(_class_note(frame, defects, values if class_masks else None))
    return Scan(frame, notes)


def _source_id(path: Path, root: Path) -> str:
    """The image's path under root without its extension: `ok/a`, `images/a`, `test/crack/000` (MVTec AD's
    train/good/000 and test/good/000 are two images); an image outside root: `<folder>/<stem>`."""
    try:
        return path.relative_to(root).with_suffix("").as_posix()
    except ValueError:
        return f"{path.parent.name}/{path.stem}"


def _class_note(frame: pd.DataFrame, classes: dict[int, str], values: Counter | None) -> str:
    if values is not None:  # class-id masks: pixels per class (tiles get their classes in crop)
        total = sum(c for v, c in values.items() if v) or 1
        return "defect classes (mask pixels): " + ", ".join(
            f"{k} {name} {values.get(k, 0) / total:.1%}" for k, name in classes.items())
    counts = frame["defect_class"].astype(int).value_counts()
    return "defect classes (images): " + ", ".join(f"{k} {name} {int(counts.get(k, 0))}" for k, name in classes.items())


def _frame(records: list[dict], root: Path, layout: dict) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records)
    for col in COLUMNS:
        if col not in frame.columns:
            frame[col] = "" if col in ("box", "mask_path", "path", "source_id") else None
    frame = frame[COLUMNS + [c for c in frame.columns if c not in COLUMNS]]
    labels = set(frame["label"].dropna().astype(int))
    # With masks, crops get their labels from the masks (crop checks each split has both
    # classes); class folders and mosaics must hold both classes themselves.
    if layout["kind"] in ("class_folders", "mosaic", "mvtec", "folder") and labels != {0, 1}:
        raise UserError(f"{root}: found only label(s) {sorted(labels)}; need undamaged (0) and damaged (1) images")
    return frame


def _notes(frame, found: Found, modes: Counter, orientations: Counter, values: Counter, min_value: int) -> list[str]:
    n_masks = int((frame["mask_path"] != "").sum())
    notes = [f"found {len(frame)} images ({int((frame['label'] == 1).sum())} damaged, "
             f"{int((frame['label'] == 0).sum())} undamaged), {n_masks} with a mask"]
    if found.unpaired_images:
        notes.append(_listing("images without a mask (labelled by their folder)", found.unpaired_images))
    if found.unpaired_masks:
        notes.append(_listing("masks without an image (ignored)", found.unpaired_masks))
    if found.label_conflicts:
        notes.append(_listing("images whose mask disagrees with their folder's class (tiles take the mask's label)",
                              found.label_conflicts))
    if found.other_files:
        notes.append(_listing("files that are not images (ignored)", found.other_files))
    converted = {k: v for k, v in modes.items() if k}
    if converted:
        notes.append("converted to 8-bit RGB: " + "; ".join(f"{v} {k}" for k, v in sorted(converted.items())))
    turned = {k: v for k, v in orientations.items() if k != 1}
    if turned:
        notes.append("turned upright by their EXIF orientation: " + ", ".join(
            f"{v} with orientation {k}" for k, v in sorted(turned.items())))
    if values:
        total = sum(values.values())
        lo, hi = min(values), max(values)
        faint = sum(c for v, c in values.items() if 0 < v < min_value) / total
        damage = sum(c for v, c in values.items() if v >= min_value) / total
        below = sorted(int(v) for v in values if 0 < v < min_value)
        shown = ", ".join(map(str, below)) if len(below) <= 4 else f"{below[0]}..{below[-1]}"
        notes.append(f"mask values {lo}..{hi}; with mask_min_value {min_value}, {damage:.2%} of mask pixels are damage"
                     + (f" and {faint:.2%} are non-zero but below it (values {shown}: read as background)" if faint else ""))
        low = sorted(int(v) for v in values if min_value <= v < 64)
        if low and hi >= 128:  # faint values beside strong ones: anti-aliasing, JPEG or stray labels, not damage?
            notes.append(f"  note: masks hold faint values {low[0]}..{low[-1]} beside values up to {hi}, read as damage "
                         f"now; if they are not damage, set layout.mask_min_value above them (e.g. 128)")
    return notes
