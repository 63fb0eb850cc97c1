"""The paper's tables, drawn from the tidy evaluation CSVs only. Each is written as CSV and
as Markdown beside it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..config import parse_run_name
from ..io import write_csv, write_text


def _split_run(frame: pd.DataFrame) -> pd.DataFrame:
    parts = frame["run"].map(parse_run_name)
    return frame.assign(generator=parts.str[0], discriminator=parts.str[1], cycles=parts.str[2])


def _notes(frame: pd.DataFrame) -> str:
    notes = sorted(set(n for n in frame["note"].dropna().astype(str) if n))
    return "\n".join(f"- {n}" for n in notes)


def table1_fid(fid: pd.DataFrame) -> pd.DataFrame:
    full = _split_run(fid[fid["condition"] == "full"])
    return full.pivot_table(index=["generator", "cycles"], columns="discriminator", values="value").reset_index()


def table3_fid_subsets(fid: pd.DataFrame) -> pd.DataFrame:
    f = _split_run(fid).rename(columns={"condition": "set"})
    return f.pivot_table(index=["generator", "cycles", "set"], columns="discriminator", values="value").reset_index()


def table2_classification(cls: pd.DataFrame) -> pd.DataFrame:
    t = cls.pivot_table(index=["run", "model"], columns="metric", values="value").reset_index()
    return t[["run", "model", "accuracy", "f1", "precision", "recall"]]


def table4_fakeness(unc: pd.DataFrame) -> pd.DataFrame:
    u = _split_run(unc).rename(columns={"model": "prediction_of"})
    return u.pivot_table(index=["generator", "cycles", "prediction_of"], columns="discriminator", values="value").reset_index()


def table5_segmentation(sal: pd.DataFrame, cls: pd.DataFrame) -> pd.DataFrame:
    """IoU of every saliency method; accuracy and F1 of the classifier behind it (D for the GAN
    runs' maps, the segmenter's own 'mask not empty' call for the segmenters)."""
    s = sal[sal["metric"].isin(["iou_mean", "iou_median", "accuracy", "f1"])]
    s = s.pivot_table(index=["run", "model"], columns="metric", values="value").reset_index()
    d = cls[cls["model"] == "D"].pivot_table(index="run", columns="metric", values="value")[["accuracy", "f1"]]
    for col in ("accuracy", "f1"):
        if col not in s:
            s[col] = float("nan")
        s[col] = s[col].fillna(s["run"].map(d[col]))
    out = s.rename(columns={"model": "saliency"})
    return out[["run", "saliency", "accuracy", "f1", "iou_mean", "iou_median"]]


def write_table(frame: pd.DataFrame, path: Path, title: str, notes: str = "") -> None:
    write_csv(path, frame)
    body = frame.to_markdown(index=False, floatfmt=".3f")
    write_text(path.with_suffix(".md"), f"# {title}\n\n{body}\n" + (f"\n{notes}\n" if notes else ""))
