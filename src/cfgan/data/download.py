"""Fetch files by URL, resumably, and verify their sha256 (unpacking them is `extract.py`'s)."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import UserError
from ..progress import progress


def sha256sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, dest: Path, sha256: str, manual: str = "", timeout: float = 30.0) -> Path:
    """Download url to dest unless a verified copy is there; resume a partial `.part` file."""
    dest = Path(dest)
    if dest.is_file():
        if sha256sum(dest) == sha256:
            return dest
        raise UserError(f"{dest}: sha256 is {sha256sum(dest)}, expected {sha256}. The file is not the one params "
                        f"name: delete it to fetch it again from {url}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if start and response.status != 206:  # server ignored the range: start over
                start = 0
            total = int(response.headers.get("Content-Length", 0)) + start or None
            with open(part, "ab" if start else "wb") as out, progress(total=total, initial=start, unit="B",
                                                                       unit_scale=True, desc=dest.name) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        how = f"\n  {manual}" if manual else ""
        raise UserError(
            f"could not fetch {url} ({exc}).\n  Fetch it by hand and put it at {dest} (sha256 {sha256}); "
            f"the step then verifies it and goes on.{how}") from exc
    got = sha256sum(part)
    if got != sha256:
        part.unlink()
        raise UserError(f"{url}: checksum mismatch (got sha256 {got}, expected {sha256}); the download was removed")
    part.replace(dest)
    return dest
