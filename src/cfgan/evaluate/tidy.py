"""The evaluation contract: one tidy row per (run, model, metric, condition, value)."""

from __future__ import annotations

import pandas as pd

COLUMNS = ["dataset", "run", "model", "metric", "condition", "value", "note"]


def rows_to_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows)
    for col in COLUMNS:
        if col not in frame:
            frame[col] = ""
    return frame[COLUMNS]


def tidy_frame(rows: list[dict], dataset: str, run: str, model=None, note: str = "") -> pd.DataFrame:
    """Rows of one evaluation, with the data set, run, model and note filled in where a row has none."""
    for r in rows:
        r.setdefault("dataset", dataset)
        r.setdefault("run", run)
        r.setdefault("model", model)
        r.setdefault("note", note)
    return rows_to_frame(rows)
