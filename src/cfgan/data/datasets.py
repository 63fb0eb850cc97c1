"""Crops from a manifest, held in memory as uint8 tensors (small enough at every scale the
paper uses: ~16k crops of 224 px is 2.4 GB), augmented on the fly on the training device."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..errors import UserError
from .crop import MANIFEST_COLUMNS
from .images import read_mask, read_rgb


@dataclass
class Split:
    images: torch.Tensor  # N x 3 x H x W, uint8
    labels: torch.Tensor  # N, int64
    masks: torch.Tensor | None  # N x H x W, bool (None if the data set has no masks)
    paths: list[str]

    def __len__(self) -> int:
        return len(self.labels)

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


def load_split(manifest_path: str | Path, split: str, limit: int | None = None) -> Split:
    manifest_path = Path(manifest_path)
    frame = read_manifest(manifest_path)
    rows = frame[frame["split"] == split]
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
    return Split(x, torch.as_tensor(rows["label"].to_numpy(), dtype=torch.long), masks, rows["path"].tolist())
