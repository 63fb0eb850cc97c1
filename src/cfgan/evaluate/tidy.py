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
