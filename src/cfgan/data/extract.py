"""Unpack zip, tar and RAR archives safely: no member may land outside the target folder.

RAR is read through libarchive (the `libarchive-c` package over the system's libarchive, which
reads RAR 4 and 5); where that is missing, the error says which command unpacks it instead.
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

from ..errors import UserError

RAR_SIGNATURE = b"Rar!\x1a\x07"


def safe_target(root: Path, name: str) -> Path:
    target = (root / name).resolve()
    if not target.is_relative_to(root.resolve()):
        raise UserError(f"archive member {name!r} would be written outside {root}; refusing to extract")
    return target


def extract(archive: Path, into: Path) -> None:
    """Extract a zip, tar or RAR archive; no member may escape `into` (no '..', absolute paths or links out)."""
    into.mkdir(parents=True, exist_ok=True)
    if is_rar(archive):
        extract_rar(archive, into)
    elif zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():  # check every name before writing any file
                safe_target(into, member.filename)
            for member in zf.infolist():
                target = safe_target(into, member.filename)
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                safe_target(into, member.name)
                if member.issym() or member.islnk():
                    safe_target(into, str(Path(member.name).parent / member.linkname))
            tf.extractall(into, filter="data")
    else:
        raise UserError(f"{archive}: not a zip, tar or RAR archive, but params mark it extract: true")


def is_rar(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(RAR_SIGNATURE)) == RAR_SIGNATURE


def unpack_commands(archive: Path, into: Path) -> str:
    return (f"unpack it by hand, then rerun this step:\n    unrar x {archive} {into}/      (Debian: apt-get install unrar)\n"
            f"  or bsdtar -xf {archive} -C {into}     (apt-get install libarchive-tools; macOS: tar -xf)\n"
            f"  or 7z x {archive} -o{into}            (apt-get install 7zip)")


def extract_rar(archive: Path, into: Path) -> None:
    """Unpack a RAR through libarchive; no member may escape `into`; links are refused."""
    try:
        import libarchive
        from libarchive.exception import ArchiveError
    except Exception as exc:  # the package, or the C library under it, is missing
        raise UserError(f"{archive}: cannot read RAR here ({exc.__class__.__name__}: {exc});\n  "
                        + unpack_commands(archive, archive.parent)) from exc
    into.mkdir(parents=True, exist_ok=True)
    try:
        with libarchive.file_reader(str(archive)) as entries:
            for entry in entries:
                target = safe_target(into, entry.pathname)
                if entry.isdir:
                    target.mkdir(parents=True, exist_ok=True)
                elif entry.isfile:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with open(target, "wb") as out:
                        for block in entry.get_blocks():
                            out.write(block)
                else:
                    raise UserError(f"{archive}: member {entry.pathname!r} is a link or device; refusing to extract")
    except ArchiveError as exc:
        raise UserError(f"{archive}: libarchive could not unpack it ({exc});\n  "
                        + unpack_commands(archive, archive.parent)) from exc
