"""Find the images of a folder and pair each with its mask, as `layout` in params describes.

Masks live in one of three places (`layout.masks`):
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

from .images import is_image_file


@dataclass
class Found:
    pairs: list[tuple[Path, Path | None]] = field(default_factory=list)  # (image, mask or None)
    unpaired_masks: list[Path] = field(default_factory=list)
    unpaired_images: list[Path] = field(default_factory=list)  # masks expected but none found
    other_files: list[Path] = field(default_factory=list)  # not images at all (.txt, .xml, ...)
    problems: list[str] = field(default_factory=list)
    label_conflicts: list[Path] = field(default_factory=list)  # filled by index.scan


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
    """Pair the images of one folder with their masks (see the module's docstring)."""
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


def _pair_parallel(folder: Path, images: list[Path], found: Found, mask_dir: Path | None, suffix: str) -> Found:
    if mask_dir is None or not mask_dir.is_dir():
        found.problems.append(f"{mask_dir}: mask folder missing (layout.masks names it)")
        return found
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
