"""A data set published as one archive the user fetches by hand (no stable URL, no checksum).

The user puts the archive as published (`source.archive.name`, e.g. the concrete set's `.rar`),
or the hosting site's zip export of the record, or the already unpacked folder, into the data
set's `downloads/` folder. This module finds which of the three is there, checks the published
size where no checksum is published, unpacks it once (a marker holding the archive's sha256
makes later runs skip the unpacking of the same file) and finds the folder that holds the
layout. Unpacking itself (zip, tar, RAR) is `extract.py`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..io import atomic_path
from .download import sha256sum
from .extract import extract

MARKER = ".cfgan-unpacked"


@dataclass
class Given:
    root: Path  # the folder holding the layout
    name: str  # what the user gave: archive file name, or "unpacked folder"
    sha256: str  # of that file ('' for a folder)
    notes: list[str]


def unpack(archive: Path, digest: str) -> Path:
    """Unpack next to the archive into <name>.d/, atomically; reuse an earlier unpacking of the same file."""
    dest = archive.with_name(archive.name + ".d")
    marker = dest / MARKER
    if marker.is_file() and marker.read_text().strip() == digest:
        return dest
    with atomic_path(dest, is_dir=True) as tmp:
        extract(archive, tmp)
        (tmp / MARKER).write_text(digest + "\n")
    return dest


def find_root(base: Path, layout: dict, depth: int = 4) -> list[Path]:
    """Folders under base (base included, `depth` levels down) holding the layout's image and mask folders."""
    need = [layout.get("images", "images"), layout.get("masks") or "masks"] if layout["kind"] == "images_masks" \
        else list(layout.get("classes") or {}) if layout["kind"] == "class_folders" else [str(f) for f in layout.get("folders", [])]
    hits, level = [], [base]
    for _ in range(depth + 1):
        hits += [d for d in level if all((d / n).is_dir() for n in need)]
        level = [c for d in level for c in sorted(d.iterdir()) if c.is_dir() and not c.name.startswith(".")]
    return hits


def _check_size(path: Path, size: int | None) -> None:
    if size and path.stat().st_size != size:
        raise UserError(f"{path}: {path.stat().st_size:,} bytes, but the published archive has {size:,} bytes. "
                        f"The download is incomplete or a different file: fetch it again")


def acquire(downloads: Path, source: dict, dataset: str) -> Given:
    """Find what the user put in downloads/ (archive, zip export or unpacked folder) and unpack it."""
    spec, layout = source["archive"], source["layout"]
    published = downloads / spec["name"]
    candidates = [published] if published.is_file() else []
    if downloads.is_dir():
        candidates += sorted(p for p in downloads.iterdir() if p.is_file() and p.suffix.lower() == ".zip")
    if len(candidates) > 1:
        raise UserError(f"{downloads}: holds {', '.join(p.name for p in candidates)}; keep one of them (the published "
                        f"{spec['name']} or the zip export), so it is clear which one this run indexes")
    notes = []
    if candidates:
        given = candidates[0]
        digest = sha256sum(given)
        if given == published:
            _check_size(given, spec.get("size"))
            if spec.get("sha256") and digest != spec["sha256"]:
                raise UserError(f"{given}: sha256 is {digest}, expected {spec['sha256']}: not the published file")
        notes.append(f"{given.name}: {given.stat().st_size:,} bytes, sha256 {digest}")
        name = given.name
        try:
            base = unpack(given, digest)
            inner = [p for p in base.rglob(spec["name"]) if p.is_file()]
            if not find_root(base, layout) and inner:  # the zip export wraps the published archive
                _check_size(inner[0], spec.get("size"))
                notes.append(f"{given.name} holds {spec['name']}; unpacking that too")
                base = unpack(inner[0], sha256sum(inner[0]))
        except UserError as exc:
            if not find_root(downloads, layout):
                raise
            # the user unpacked it by hand, as the error of an earlier run told them to
            base, name = downloads, f"{given.name} (unpacked by hand)"
            notes.append(f"could not unpack {given.name} here ({str(exc).splitlines()[0]}); "
                         f"indexing the folder unpacked beside it")
    else:
        base, name, digest = downloads, "unpacked folder", ""
    roots = find_root(base, layout) if base.is_dir() else []
    if len(roots) > 1:
        raise UserError(f"{base}: several folders hold the layout ({', '.join(map(str, roots))}); keep one")
    if not roots:
        raise UserError(
            f"datasets.{dataset}: nothing to index in {downloads}. This data set needs a manual step:\n  "
            f"{source.get('manual', '')}\n  Expected there: {spec['name']}"
            + (f" ({spec['size']:,} bytes)" if spec.get("size") else "")
            + f", the page's zip export, or the unpacked folder. Page: {source.get('homepage', '(see params)')}")
    if name == "unpacked folder":
        notes.append(f"indexing the unpacked folder {roots[0]} (no archive to checksum)")
    return Given(roots[0], name, digest, notes)

