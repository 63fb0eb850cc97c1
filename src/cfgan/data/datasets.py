"""Crops from a manifest, held in memory as uint8 tensors (small enough at every scale the
paper uses: ~16k crops of 224 px is 2.4 GB), augmented on the fly on the training device."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import run_defect, with_defect
from ..errors import UserError
from .crop import MANIFEST_COLUMNS
from .images import read_mask, read_rgb


@dataclass
class Split:
    images: torch.Tensor  # N x 3 x H x W, uint8
    labels: torch.Tensor  # N, int64
    masks: torch.Tensor | None  # N x H x W, bool (None if the data set has no masks)
    paths: list[str]
    classes: torch.Tensor | None = None  # N, int64: defect class ids (0 undamaged); the labels on binary data

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: torch.Tensor) -> "Split":
        """The crops at `idx` (a 1-D index tensor), in that order."""
        return Split(self.images[idx], self.labels[idx], None if self.masks is None else self.masks[idx],
                     [self.paths[i] for i in idx.tolist()], None if self.classes is None else self.classes[idx])

    def to(self, device) -> "Split":
        """The crops (uint8) and masks moved to `device` once, so that a training loop on a GPU
        builds each batch there instead of gathering it on the host and copying it every step.
        Labels and class ids stay on the CPU: batches are drawn from them there (a draw on the
        device would wait for it). A no-op on the CPU."""
        return Split(self.images.to(device), self.labels, None if self.masks is None else self.masks.to(device),
                     self.paths, self.classes)

    def batch(self, idx, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[idx].to(device, non_blocking=True).float().div_(255)
        return x, self.labels[idx].to(device)


def read_manifest(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: manifest not found (run the crop step first)")
    frame = pd.read_csv(path, keep_default_na=False, dtype={"mask_path": str, "source_id": str})
    missing = set(MANIFEST_COLUMNS) - set(frame.columns)
    if missing:
        raise UserError(f"{path}: manifest lacks column(s) {sorted(missing)}; expected {MANIFEST_COLUMNS}")
    return frame


def defect_names(frame: pd.DataFrame) -> list[str]:
    """The defect classes of a multi-class manifest, in id order; [] for a binary one."""
    if "defect_name" not in frame.columns:
        return []
    damaged = frame[frame["defect_class"].astype(int) > 0]
    return list(dict.fromkeys(damaged.sort_values("defect_class", kind="stable")["defect_name"]))


def task_rows(frame: pd.DataFrame, defect: str | None, where: Path) -> pd.DataFrame:
    """One defect class's binary task (its crops against the undamaged ones); all rows for None."""
    if defect is None:
        return frame
    names = defect_names(frame)
    if defect not in names:
        known = ", ".join(names) if names else "none: the manifest is binary"
        raise UserError(f"{where}: no defect class {defect!r} in this manifest (its classes: {known})")
    return frame[(frame["defect_class"].astype(int) == 0) | (frame["defect_name"] == defect)]


NEGATIVES = ("all", "same_photos")


def matched_negatives(rows: pd.DataFrame, defect: str | None) -> pd.DataFrame:
    """`rows` with only the undamaged crops cut from a photo (`source_id`) that also gives a damaged
    crop of the task (`defect`'s, or any for binary data). Matched negatives: the undamaged crops then
    share surface, lighting and texture with the damaged ones, so the photo no longer tells the
    classes apart, and crops of photos full of another defect's unannotated marks (NEU-Seg's patches
    photos hold dark specks like inclusions) leave the inclusion task's negatives."""
    damaged = rows["label"] == 1
    if defect is not None:
        damaged &= rows["defect_name"] == defect
    photos = set(rows.loc[damaged, "source_id"])
    return rows[damaged | ((rows["label"] == 0) & rows["source_id"].isin(photos))]


def split_labels(manifest_path: str | Path, split: str, defect: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A split's labels (manifest order, no image read) and which of its crops belong to one
    defect class's task (all for None)."""
    frame = read_manifest(manifest_path)
    rows = frame[frame["split"] == split]
    return rows["label"].to_numpy(), rows.index.isin(task_rows(frame, defect, Path(manifest_path)).index)


def tasks(manifest_path: str | Path, run: str) -> list[tuple[str | None, str]]:
    """(defect class, run name for the rows) of each task an evaluation of `run` covers: a
    one-vs-rest GAN its own class; a class-agnostic model (plain twin, segmenter, references) each
    defect class of a multi-class manifest in turn, as `run-k{class}`; binary data one task."""
    defect = run_defect(run)
    if defect is not None:
        return [(defect, run)]
    names = defect_names(read_manifest(manifest_path))
    return [(name, with_defect(run, name)) for name in names] or [(None, run)]


def load_split(manifest_path: str | Path, split: str, limit: int | None = None, defect: str | None = None,
               negatives: str = "all") -> Split:
    """One split's crops; `defect`: only that defect class's task of a multi-class manifest;
    `negatives`: "all" undamaged crops, or "same_photos" (`matched_negatives`, train.negatives)."""
    manifest_path = Path(manifest_path)
    frame = task_rows(read_manifest(manifest_path), defect, manifest_path)
    rows = frame[frame["split"] == split]
    if negatives not in NEGATIVES:
        raise UserError(f"train.negatives: {negatives!r} is not one of {', '.join(NEGATIVES)}")
    if negatives == "same_photos":
        kept = matched_negatives(rows, defect)
        n_all, n_kept = int((rows["label"] == 0).sum()), int((kept["label"] == 0).sum())
        if n_kept == 0:
            raise UserError(f"{manifest_path}: train.negatives same_photos leaves no undamaged crop in split {split!r}"
                            f"{f' for {defect}' if defect else ''}: no photo gives both an undamaged and a damaged "
                            f"crop (use negatives: all, or a smaller crop_size)")
        print(f"train.negatives same_photos: {n_kept} of {n_all} undamaged {split} crops"
              f"{f' ({defect})' if defect else ''}")
        rows = kept
    if limit is not None:
        rows = rows.iloc[:limit]
    if rows.empty:
        raise UserError(f"{manifest_path}: no crops in split {split!r}")
    root = manifest_path.parent
    with ThreadPoolExecutor(4) as pool:
        images = list(pool.map(lambda p: read_rgb(root / p), rows["path"]))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    masks = None
    if (rows["mask_path"] != "").all():
        with ThreadPoolExecutor(4) as pool:
            masks = torch.from_numpy(np.stack(list(pool.map(lambda p: read_mask(root / p, 128), rows["mask_path"]))))
    labels = torch.as_tensor(rows["label"].to_numpy(), dtype=torch.long)
    classes = torch.as_tensor(rows["defect_class"].astype(int).to_numpy(), dtype=torch.long) \
        if "defect_class" in rows.columns else labels
    return Split(x, labels, masks, rows["path"].tolist(), classes)
