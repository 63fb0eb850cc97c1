"""`cfgan publish`: one finished experiment's numbers as one small JSON file under docs/runs/, the only source
of the README's and docs/results.md's current results (`cfgan results-tables`, report/results_tables.py).

A published file holds the report's metrics.json as it is (its `provenance`: commit, params files, experiment,
seeds, compute, date), the command that made the run (which no step can know: the front door is the user's),
and the headline numbers read from the report's tables, each as {mean, sd, n} over seeds:

- `table5_segmentation`: every map's median and mean IoU and the threshold-free pixel AUROC, AUPRO, ODS, OIS
  (where the table has them; no rows on a data set without masks);
- `table2_classification`: every classifier's clean F1 and image AUROC;
- `robustness_f1`: every classifier's F1 under each PGD step size and noise level, aggregated over seeds from the
  robustness evaluations as figure 3 draws them (the report writes no table of them; plots/pgd.csv holds means only);
- `table4_fakeness_correlation`: Pearson r of D's (and G's head's) p_fake with the per-sample NLL.

Each row keeps its table's key columns (config, model or saliency, defect, explains, crops, ...) as they are.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ..errors import UserError
from ..io import write_json
from .metrics import PROVENANCE
from .tables import over_seeds, with_config

FORMAT = "cfgan-published-run/1"
TABLE5_METRICS = ("iou_median", "iou_mean", "pixel_auroc", "aupro_fpr30", "ods_tol2", "ois_tol2")
TABLE2_METRICS = ("f1", "auroc")
TABLE4_METRICS = ("pearson_r",)
ATTACKS = ("pgd", "noise")


def stat(mean, sd, n) -> dict | None:
    """{mean, sd, n} with None for what is missing (one seed has no sd); None when there is no mean."""
    def num(v):
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
    if num(mean) is None:
        return None
    return {"mean": round(num(mean), 6), "sd": None if num(sd) is None else round(num(sd), 6),
            "n": None if num(n) is None else int(n)}


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path}: not found: run the report step (`cfgan report`) for this results folder first")
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def table_rows(frame: pd.DataFrame, metrics: tuple[str, ...]) -> list[dict]:
    """One dict per table row: its key columns as they are (every column that is not a metric, a metric's `_sd`
    or `n_seeds`), then each of `metrics` the table has as {mean, sd, n}."""
    measured = {c for c in frame.columns if f"{c}_sd" in frame.columns}
    keys = [c for c in frame.columns if c not in measured and c != "n_seeds" and not (c.endswith("_sd") and c[:-3] in measured)]
    rows = []
    for r in frame.to_dict("records"):
        row = {k: (None if isinstance(r[k], float) and math.isnan(r[k]) else r[k]) for k in keys}
        for m in metrics:
            if m in measured and (s := stat(r[m], r[f"{m}_sd"], r.get("n_seeds"))) is not None:
                row[m] = s
        rows.append(row)
    return rows


def robustness_rows(evaluations: Path) -> list[dict]:
    """F1 under each attack strength per classifier (mean, sd, n over seeds), from the tidy robustness CSVs."""
    folder = evaluations / "robustness"
    files = sorted(folder.glob("*.csv")) if folder.is_dir() else []
    if not files:
        raise UserError(f"{folder}: no robustness evaluations (*.csv) found: publish reads F1 under PGD and noise from "
                        "them (run the robustness steps, or give --results the folder holding evaluations/)")
    rob = pd.concat([pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in files], ignore_index=True)
    rob = rob[(rob["metric"] == "f1") & rob["condition"].astype(str).str.contains("=")]
    rob = rob.assign(attack=rob["condition"].str.split("=").str[0], strength=rob["condition"].str.split("=").str[1].astype(float))
    rob = with_config(rob[rob["attack"].isin(ATTACKS)])
    keys = (["defect"] if rob["defect"].notna().any() else []) + ["config", "model", "attack", "strength"]
    table = over_seeds(rob, keys, ["f1"]).sort_values(keys, kind="stable")
    return table_rows(table, ("f1",))


def table4_rows(frame: pd.DataFrame) -> list[dict]:
    """Table 4's rows with `config` ({generator}-{discriminator}-c{cycles}) first, as table 2 and 5 name it."""
    rows = table_rows(frame, TABLE4_METRICS)
    return [{"config": f"{r['generator']}-{r['discriminator']}-c{int(r['cycles'])}", **r} for r in rows]


def collect(results: Path, command: str) -> dict:
    """The published record of one results folder (results/<dataset>/<experiment>)."""
    results = Path(results)
    if not results.is_dir():
        raise UserError(f"{results}: no such results folder (expected results/<dataset>/<experiment>)")
    metrics_path = results / "metrics.json"
    if not metrics_path.is_file():
        raise UserError(f"{metrics_path}: not found: run the report step (`cfgan report`) for this results folder first")
    metrics = json.loads(metrics_path.read_text())
    prov = metrics.get(PROVENANCE)
    if not isinstance(prov, dict):
        raise UserError(f"{metrics_path}: has no '{PROVENANCE}' (commit, seeds, compute, date): it was written by an older "
                        "`cfgan report`; rerun the report step with the current code")
    tdir = results / "tables"
    t5_path = tdir / "table5_segmentation.csv"  # only data sets with masks have one
    return {
        "format": FORMAT,
        "dataset": prov.get("dataset") or results.parent.name,
        "experiment": prov.get("experiment") or results.name,
        "command": command,
        "results": str(results),
        "published": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "metrics": metrics,
        "table5_segmentation": table_rows(_read_table(t5_path), TABLE5_METRICS) if t5_path.is_file() else [],
        "table2_classification": table_rows(_read_table(tdir / "table2_classification.csv"), TABLE2_METRICS),
        "robustness_f1": robustness_rows(results / "evaluations"),
        "table4_fakeness_correlation": table4_rows(_read_table(tdir / "table4_fakeness_correlation.csv")),
    }


def publish(results: Path, command: str, out: Path, force: bool = False) -> dict:
    """Write `collect(results, command)` to `out` atomically; an existing `out` only with `force`."""
    out = Path(out)
    if not command.strip():
        raise UserError("--command is empty: give the command that made the run, e.g. "
                        "\"snakemake --profile workflow/profiles/crackforest all --config experiment=r1-1800\"")
    if out.exists() and not force:
        raise UserError(f"{out}: already exists; pass --force to replace it (the published numbers of another run)")
    if out.suffix != ".json":
        raise UserError(f"{out}: a published run is a .json file (docs/runs/<dataset>/<experiment>.json)")
    record = collect(results, command)
    write_json(out, record)
    return record
