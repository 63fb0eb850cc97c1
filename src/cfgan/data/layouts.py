"""Find the images of a folder and pair each with its mask, as `layout` in params describes.

`parts` turns a layout into the folders to read, each with the label its folder gives and where
its masks are (`Part`); `index.scan` reads them all the same way. Kinds:
- class_folders: one folder per class (`layout.classes`); images_masks: one folder, labels from the masks.
- mvtec: the MVTec AD tree, `train/good`, `test/good` (label 0, no masks), `test/<defect>` (label 1,
  or the defect's class id with `defect_classes`) with masks `ground_truth/<defect>/<stem>_mask.*`.
  train and test are pooled: the split step splits by source image itself.
- folder: anomalib's Folder layout, `normal_dir` (+ `normal_test_dir`, pooled) label 0, `abnormal_dir`
  label 1, masks in `mask_dir` (optional) named `<stem><mask_suffix>.*`.
The keys each of mvtec and folder takes are those of its schema (`$defs.layout_<kind>`).

Masks of class_folders and images_masks live in one of three places (`layout.masks`):
- absent / null: no masks. Two image files sharing a stem (`x.jpg`, `x.png`) are then refused:
  the second is most likely a mask, and reading it as one more image would poison the class.
- `beside`: next to the images. The mask of `x.jpg` is `x<mask_suffix><mask_extension>`
  (default `x.png`); such files are masks, never images.
- a folder name: a parallel tree (`<root>/<masks>/<class>/x<mask_suffix>.*` for class folders,
  `<root>/<masks>/x<mask_suffix>.*` for images_masks).
Upper- and lower-case extensions count alike. Everything that does not fit is collected as a
problem (an error) or as an unpaired file (reported), never dropped silently.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .images import is_image_file


@dataclass
class Found:
    pairs: list[tuple[Path, Path | None]] = field(default_factory=list)  # (image, mask or None)
    unpaired_masks: list[Path] = field(default_factory=list)
    unpaired_images: list[Path] = field(default_factory=list)  # masks expected but none found
    other_files: list[Path] = field(default_factory=list)  # not images at all (.txt, .xml, ...)
    problems: list[str] = field(default_factory=list)
    label_conflicts: list[Path] = field(default_factory=list)  # filled by index.scan


@dataclass
class Part:
    """One folder of images: the label its folder gives and where its images' masks are."""
    folder: Path
    label: int | None  # the folder's class id (0 undamaged, 1..K a defect type); None: the masks decide
    masks: str | None = None  # None (no masks), "beside" (next to the images) or "parallel" (in mask_dir)
    mask_dir: Path | None = None
    suffix: str = ""  # a mask's stem is its image's stem + this
    extension: str = ".png"  # beside without a suffix: files with this extension are masks
    required: bool = False  # an image without a mask is an error (else it is labelled by its folder, and noted)
    optional_mask_dir: bool = False  # a missing mask_dir means "no masks for this folder" (noted), not an error
    what: str = "class folder"  # for messages: "<folder>: class folder holds no images"
    named_by: str = "layout.classes"  # the params key that names the folder
    masks_named_by: str = "layout.masks names it"  # why a mask folder is expected
    hint: str = ""  # appended to a missing mask's error: how to get past it


def parts(root: Path, layout: dict) -> list[Part]:
    """The folders a layout (any kind but mosaic) names under root, each as a Part."""
    kind = layout["kind"]
    if kind in ("mvtec", "folder"):
        check_keys(layout)
        return _mvtec(root, layout) if kind == "mvtec" else _folder(root, layout)
    masks = layout.get("masks")
    suffix, extension = layout.get("mask_suffix", ""), layout.get("mask_extension", ".png")
    mode = None if masks is None else "beside" if masks == "beside" else "parallel"
    if kind == "class_folders":
        classes = layout.get("classes") or {}
        if not classes:
            raise UserError(f"layout.classes: expected a mapping sub-folder -> class (0 undamaged, 1.. damaged) for {root}")
        out = []
        for folder, label in classes.items():
            mask_dir = root / masks / folder if mode == "parallel" else None
            # a parallel mask tree often covers the damaged classes only
            out.append(Part(root / folder, label, mode, mask_dir, suffix, extension,
                            optional_mask_dir=mask_dir is not None and mask_dir.parent.is_dir()))
        return out
    img_dir = root / layout.get("images", "images")
    masks = masks or "masks"  # images_masks: masks are required, in "masks" unless said otherwise
    mask_dir = root / masks if masks != "beside" else None
    for d in (img_dir, mask_dir):
        if d is not None and not d.is_dir():
            raise UserError(f"{d}: folder missing (layout kind images_masks expects images and masks)")
    return [Part(img_dir, None, "beside" if mask_dir is None else "parallel", mask_dir, suffix, extension,
                 required=True, what="", named_by="layout.images")]


def check_keys(layout: dict) -> None:
    """A layout's keys against its kind's schema (`$defs.layout_<kind>`): unknown or missing keys are errors."""
    from ..config import schema
    spec = schema()["$defs"][f"layout_{layout['kind']}"]
    allowed, required = set(spec["properties"]), set(spec.get("required", []))
    unknown, missing = sorted(set(layout) - allowed), sorted(required - set(layout))
    if unknown or missing:
        what = "; ".join(([f"unknown key(s) {', '.join(unknown)}"] if unknown else [])
                         + ([f"missing key(s) {', '.join(missing)}"] if missing else []))
        raise UserError(f"layout (kind {layout['kind']}): {what}; allowed keys: {', '.join(sorted(allowed))} "
                        f"(required: {', '.join(sorted(required))})")


def has_masks(layout: dict) -> bool:
    """Whether a layout gives its damaged images masks (so saliency IoU and the segmenters apply)."""
    return layout.get("kind") in ("images_masks", "mvtec") or bool(layout.get("masks") or layout.get("mask_dir"))


MVTEC = "layout kind mvtec expects train/good, test/good, test/<defect> and ground_truth/<defect>"
ALLOW = "; layout.allow_missing_masks: true indexes damaged images without a mask by their folder's label alone"


def _mvtec(root: Path, layout: dict) -> list[Part]:
    from .classes import defect_classes
    allow = bool(layout.get("allow_missing_masks"))
    test, truth = root / "test", root / "ground_truth"
    for d in (root / "train" / "good", test / "good") + (() if allow else (truth,)):
        if not d.is_dir():
            raise UserError(f"{d}: folder missing ({MVTEC}{ALLOW if d == truth else ''})")
    present = sorted(d.name for d in test.iterdir() if d.is_dir() and d.name != "good" and not d.name.startswith("."))
    chosen = list(dict.fromkeys(layout.get("defects") or present))
    absent = [d for d in chosen if d not in present]
    if absent:
        nor = f" (nor {', '.join(absent[1:])})" if absent[1:] else ""
        raise UserError(f"layout.defects: no folder {test / absent[0]}{nor}; the defect folders of {test} are: "
                        f"{', '.join(present) or 'none'}")
    if not chosen:
        raise UserError(f"{test}: holds no defect folder besides good/ ({MVTEC})")
    ids = {name: k for k, name in defect_classes(layout).items()} if layout.get("defect_classes") else {}
    out = [Part(root / "train" / "good", 0, what="folder", named_by="layout kind mvtec"),
           Part(test / "good", 0, what="folder", named_by="layout kind mvtec")]
    for d in chosen:
        out.append(Part(test / d, ids.get(d, 1), "parallel", truth / d, "_mask", required=not allow,
                        optional_mask_dir=allow, what="defect folder", named_by="layout kind mvtec",
                        masks_named_by=f"MVTec AD keeps the masks of test/{d}/ there{ALLOW}", hint=ALLOW))
    return out


def _folder(root: Path, layout: dict) -> list[Part]:
    def folder(key: str) -> Path:
        path = root / str(layout[key])
        if not path.is_dir():
            raise UserError(f"{path}: folder missing (layout.{key} names it, relative to the source path {root})")
        return path
    keys = ["normal_dir"] + (["normal_test_dir"] if layout.get("normal_test_dir") else []) + ["abnormal_dir"]
    dirs = {k: folder(k) for k in keys}
    for k, d in dirs.items():  # anomalib reads sub-folders too; read flat, their images would be lost silently
        nested = [s for s in sorted(d.iterdir()) if s.is_dir() and not s.name.startswith(".")
                  and any(is_image_file(f) for f in s.rglob("*") if f.is_file())]
        if nested:
            raise UserError(f"{nested[0]}: images in a sub-folder of layout.{k} ({d}); this layout reads the images "
                            f"directly inside each folder it names: move them up into {d.name}/")
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            if dirs[a].resolve() == dirs[b].resolve():
                raise UserError(f"layout.{a} and layout.{b} both name {dirs[a]}; each class needs its own folder")
    allow, suffix = bool(layout.get("allow_missing_masks")), layout.get("mask_suffix", "")
    out = [Part(dirs[k], 0, what="folder", named_by=f"layout.{k}") for k in keys if k != "abnormal_dir"]
    abnormal = Part(dirs["abnormal_dir"], 1, what="folder", named_by="layout.abnormal_dir")
    if layout.get("mask_dir"):
        mask_dir = folder("mask_dir")
        abnormal.required, abnormal.suffix, abnormal.hint = not allow, suffix, "" if allow else ALLOW
        if mask_dir.resolve() == abnormal.folder.resolve():  # masks beside the abnormal images
            if not suffix:
                raise UserError(f"layout.mask_dir and layout.abnormal_dir both name {mask_dir}: masks beside the "
                                f"images need layout.mask_suffix (e.g. _mask) to tell them from the images")
            abnormal.masks = "beside"
        else:
            abnormal.masks, abnormal.mask_dir = "parallel", mask_dir
    return out + [abnormal]


def _files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) of a folder, sorted; hidden files and sub-folders ignored."""
    entries = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return [p for p in entries if is_image_file(p)], [p for p in entries if not is_image_file(p)]


def _by_stem(files: list[Path]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = defaultdict(list)
    for f in files:
        groups[f.stem].append(f)
    return groups


def scan_folder(folder: Path, masks: str | None, mask_dir: Path | None, suffix: str, extension: str) -> Found:
    """Pair the images of one folder with their masks (see the module's docstring); `masks` is None,
    "beside" or "parallel" (in mask_dir, which the caller has checked exists)."""
    found = Found()
    images, found.other_files = _files(folder)
    if masks is None:
        for stem, group in _by_stem(images).items():
            if len(group) > 1:
                names = " and ".join(p.name for p in group)
                found.problems.append(
                    f"{folder}: {names} share the stem {stem!r}. If one is the other's mask, set layout.masks: beside "
                    f"(and layout.mask_extension to the masks' extension); if they are different images, rename one")
                continue
            found.pairs.append((group[0], None))
        return found
    if masks == "beside":
        return _pair_beside(folder, images, found, suffix, extension.lower())
    return _pair_parallel(folder, images, found, mask_dir, suffix)


def _pair_beside(folder: Path, files: list[Path], found: Found, suffix: str, extension: str) -> Found:
    def is_mask(p: Path) -> bool:
        return p.stem.endswith(suffix) if suffix else p.suffix.lower() == extension
    masks = [p for p in files if is_mask(p)]
    kind = f"*{suffix}.*" if suffix else f"*{extension}"
    return _pair(folder, [p for p in files if not is_mask(p)], masks, found, suffix, folder,
                 f" and neither is a mask (masks here are {kind}); rename one", " as its mask")


def _pair_parallel(folder: Path, images: list[Path], found: Found, mask_dir: Path, suffix: str) -> Found:
    mask_files, _ = _files(mask_dir)
    return _pair(folder, images, mask_files, found, suffix, mask_dir, ", so one mask name would fit both; rename one", "")


def _pair(folder: Path, images: list[Path], mask_files: list[Path], found: Found, suffix: str, mask_place: Path,
          clash: str, fits: str) -> Found:
    """Each image with the mask named `<stem><suffix>.*`; ambiguous names become problems, not guesses."""
    by_stem = _by_stem(mask_files)
    used = set()
    for stem, group in _by_stem(images).items():
        if len(group) > 1:
            found.problems.append(f"{folder}: {' and '.join(p.name for p in group)} share the stem {stem!r}{clash}")
            continue
        candidates = by_stem.get(stem + suffix, [])
        if len(candidates) > 1:
            found.problems.append(f"{mask_place}: {' and '.join(p.name for p in candidates)} both fit image "
                                  f"{group[0].name}{fits}; keep one")
            continue
        mask = candidates[0] if candidates else None
        if mask is None:
            found.unpaired_images.append(group[0])
        else:
            used.add(mask)
        found.pairs.append((group[0], mask))
    found.unpaired_masks = sorted(set(mask_files) - used)
    return found
