"""Headline numbers for `dvc metrics show` and sweep curves for `dvc plots show`."""

from __future__ import annotations

import numpy as np
import pandas as pd


def headline(cls: pd.DataFrame, rob: pd.DataFrame, unc: pd.DataFrame, sal: pd.DataFrame) -> dict:
    """{run: {metric: value}}: test F1 of each classifier, F1 at the sweeps' middle strengths,
    the fakeness correlation, and the median saliency IoU of every method."""
    out: dict = {}

    def put(run, key, value):
        out.setdefault(run, {})[key] = None if value is None or np.isnan(value) else round(float(value), 6)

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
    return out


def sweep_table(rob: pd.DataFrame, attack: str) -> pd.DataFrame:
    """Wide table: strength, then the F1 of every model (run/model) at that strength."""
    r = rob[(rob["metric"] == "f1") & rob["condition"].str.startswith(attack + "=")].copy()
    r["strength"] = r["condition"].str.split("=").str[1].astype(float)
    r["series"] = r["run"] + ":" + r["model"]
    return r.pivot_table(index="strength", columns="series", values="value").reset_index()
