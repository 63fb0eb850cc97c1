"""Headline numbers for `dvc metrics show` and sweep curves for `dvc plots show`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import split_seed


def headline(cls: pd.DataFrame, rob: pd.DataFrame, unc: pd.DataFrame, sal: pd.DataFrame) -> dict:
    """{configuration: {metric: value}}: test F1 of each classifier, F1 at the sweeps' middle
    strengths, the fakeness correlation, and the median saliency IoU of every method; each the
    mean over seeds (a run's name without `-s{seed}`)."""
    sums: dict = {}

    def put(run, key, value):
        if value is not None and not np.isnan(value):
            sums.setdefault((split_seed(run)[0], key), []).append(float(value))

    for r in cls[cls["metric"] == "f1"].itertuples():
        put(r.run, f"f1_{r.model}", r.value)
    for attack in ("pgd", "noise"):
        sweep = rob[(rob["metric"] == "f1") & rob["condition"].str.startswith(attack + "=")]
        strengths = sorted({float(c.split("=")[1]) for c in sweep["condition"]})
        if strengths:
            middle = strengths[len(strengths) // 2]
            for r in sweep[sweep["condition"].map(lambda c: float(c.split("=")[1]) == middle)].itertuples():
                put(r.run, f"f1_{attack}_{middle:g}", r.value)
    for r in unc.itertuples():
        put(r.run, f"fakeness_r_{r.model}", r.value)
    if not sal.empty:
        for r in sal[sal["metric"] == "iou_median"].itertuples():
            put(r.run, f"iou_median_{r.model}", r.value)
    out: dict = {}
    for (config, key), values in sums.items():
        out.setdefault(config, {})[key] = round(float(np.mean(values)), 6)
        out[config]["n_seeds"] = max(out[config].get("n_seeds", 0), len(values))
    return out


def sweep_table(rob: pd.DataFrame, attack: str) -> pd.DataFrame:
    """Wide table: strength, then the F1 of every model (configuration:model, mean over seeds)."""
    r = rob[(rob["metric"] == "f1") & rob["condition"].str.startswith(attack + "=")].copy()
    r["strength"] = r["condition"].str.split("=").str[1].astype(float)
    r["series"] = r["run"].map(lambda run: split_seed(run)[0]) + ":" + r["model"]
    return r.pivot_table(index="strength", columns="series", values="value", aggfunc="mean").reset_index()
