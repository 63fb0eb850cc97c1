"""Split by source image (70/10/20 by default), stratified by label, seeded, before cropping,
so that no source image's crops reach two splits. Where the index knows an image's defect class
(class folders, file-name prefixes), the strata are the classes, so each class is split alike;
class-id masks decide classes per tile, after the split (crop checks every split holds each)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import UserError


def assign_splits(index: pd.DataFrame, fractions: dict, seed: int) -> pd.DataFrame:
    total = fractions["train"] + fractions["val"] + fractions["test"]
    if abs(total - 1) > 1e-6:
        raise UserError(f"split: train + val + test must be 1, got {total}")
    stratum = index["label"].astype(int)
    if "defect_class" in index.columns:
        known = pd.to_numeric(index["defect_class"], errors="coerce")
        stratum = known.fillna(stratum).astype(int)
    groups = stratum.groupby(index["source_id"]).max().sort_index()
    rng = np.random.default_rng(seed)
    assignment = {}
    for label in sorted(groups.unique()):
        ids = groups.index[groups == label].to_numpy()
        ids = ids[rng.permutation(len(ids))]
        n_train = int(round(len(ids) * fractions["train"]))
        n_val = int(round(len(ids) * fractions["val"]))
        for i, sid in enumerate(ids):
            assignment[sid] = "train" if i < n_train else "val" if i < n_train + n_val else "test"
    out = index.copy()
    out["split"] = out["source_id"].map(assignment)
    return out
