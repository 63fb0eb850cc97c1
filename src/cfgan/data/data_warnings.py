"""The data warnings of a data set, where a user sees them: on the terminal and in the step's log as
the step runs (`console.warn`), in `data/processed/<dataset>/warnings.json` (written by the crop
step inside its output folder, so atomically with the crops), in the summary that Snakemake's
`onsuccess:`/`onerror:` handlers print at the end of a run (the Snakefile), and at the top of the
HTML report (`snakemake --report`: workflow/report/workflow.rst).

warnings.json: `{"warnings": [{"step", "kind", "message", ...details}]}`, an empty list when the
data raised nothing. Kinds: `small_defects` (damaged crops whose defect is too small to learn at
image_size, with the tiling that keeps more of them), `mask_class_conflict` (images whose mask
disagrees with their folder's class), `mixed_tiles` (tiles dropped for holding two defect
classes), `images_dropped` (source images that gave no crop).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..console import warn
from ..io import write_json

FILE = "warnings.json"
PROCESSED = Path("data/processed")


class Collected:
    """The warnings one step raises: each said at once (terminal and log), all kept for warnings.json."""

    def __init__(self, step: str):
        self.step, self.items = step, []

    def add(self, kind: str, message: str, **details) -> None:
        warn(self.step, message)
        self.items.append({"step": self.step, "kind": kind, "message": message, **details})

    def write(self, folder: Path) -> Path:
        write_json(Path(folder) / FILE, {"warnings": self.items})
        return Path(folder) / FILE


def read(datasets: list[str], root: Path = PROCESSED) -> dict[str, list[dict]]:
    """{dataset: its warnings} of the data sets whose crops are in place (a warnings.json beside a
    manifest.csv: a failed or removed crop step leaves no current one), those with any only."""
    found = {}
    for ds in datasets:
        path = Path(root) / ds / FILE
        if not (path.is_file() and (path.parent / "manifest.csv").is_file()):
            continue
        try:
            items = json.loads(path.read_text()).get("warnings", [])
        except (OSError, ValueError):
            items = [{"step": "?", "kind": "unreadable", "message": f"{path} could not be read"}]
        if items:
            found[ds] = items
    return found


def summary(datasets: list[str], root: Path = PROCESSED) -> str:
    """The end-of-run summary ('' when no data set has a warning)."""
    found = read(datasets, root)
    if not found:
        return ""
    lines = [f"Data warnings ({sum(map(len, found.values()))}; each data set's in {Path(root)}/<dataset>/{FILE}):"]
    for ds, items in found.items():
        lines += [f"  {ds}: WARNING {w.get('step', '?')}: {w['message']}" for w in items]
    return "\n".join(lines)


def print_summary(datasets: list[str], root: Path = PROCESSED) -> None:
    import sys
    text = summary(datasets, root)
    if text:
        print(text, file=sys.stderr, flush=True)


def rst(text: str) -> str:
    """Text safe inside reStructuredText (the report's captions): markup characters escaped."""
    return re.sub(r"([\\`*_|\[\]<>:{}#=-])", r"\\\1", " ".join(str(text).split()))


def for_report(datasets: list[str], root: Path = PROCESSED) -> dict[str, list[str]]:
    """{dataset: its warnings as reStructuredText} for workflow/report/workflow.rst (via the config)."""
    return {ds: [rst(f"{w.get('step', '?')}: {w['message']}") for w in items] for ds, items in read(datasets, root).items()}
