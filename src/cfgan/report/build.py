"""`cfgan report`: every table and figure of the paper for one data set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..config import grid_seeds, run_name
from ..errors import UserError
from ..io import write_json, write_csv
from . import figures, metrics, tables


def _read(paths: list[Path]) -> pd.DataFrame:
    frames = [pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in paths]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def build_report(params: dict, evaluations: Path, out: Path) -> list[Path]:
    ev = {kind: sorted((evaluations / kind).glob("*.csv")) for kind in
          ("fid", "classification", "robustness", "uncertainty", "saliency")}
    if not ev["classification"]:
        raise UserError(f"{evaluations}: no evaluation CSVs found (run the evaluation steps first)")
    fid, cls, rob, unc, sal = (_read(ev[k]) for k in ("fid", "classification", "robustness", "uncertainty", "saliency"))
    tdir, fdir = out / "tables", out / "figures"
    written = []

    def table(frame, name, title, notes=""):
        tables.write_table(frame, tdir / name, title, notes)
        written.append(tdir / name)

    table(tables.table1_fid(fid), "table1_fid.csv", "Table 1: FID of counterfactuals, full test set", tables._notes(fid))
    table(tables.table2_classification(cls), "table2_classification.csv",
          "Table 2: classification on the test split (mean over seeds, sd, n_seeds)", tables._notes(cls))
    table(tables.table3_fid_subsets(fid), "table3_fid_subsets.csv", "Table 3: FID on full / undamaged / damaged subsets (A.2)", tables._notes(fid))
    table(tables.table4_fakeness(unc), "table4_fakeness_correlation.csv",
          "Table 4: Pearson r between D's fake probability and the per-sample NLL (A.3)", tables._notes(unc))
    show = params["report"]["showcase"]
    first_seed = grid_seeds(params)[0]
    showcase = run_name(show["generator"], show["discriminator"], show["cycles"], first_seed)  # figures 2 and 4: one seed
    ex = evaluations / "examples"
    figures.fig2_counterfactuals(dict(np.load(ex / f"{showcase}_counterfactuals.npz")), fdir / "fig2_counterfactuals.png",
                                 f"Counterfactuals of {showcase} (test split)")
    trivial = cls[(cls["run"] == "references") & (cls["metric"] == "f1")].set_index("model")["value"].to_dict()
    figures.fig3_sweep(rob, "pgd", fdir / "fig3_pgd.png", "PGD step size (targeted, fixed iterations)", trivial)
    figures.fig3_sweep(rob, "noise", fdir / "fig3_noise.png", "Gaussian noise standard deviation", trivial)
    written += [fdir / "fig2_counterfactuals.png", fdir / "fig3_pgd.png", fdir / "fig3_noise.png"]
    if not sal.empty:
        t5 = tables.table5_segmentation(sal, cls)
        table(t5, "table5_segmentation.csv", "Table 5: saliency masks against ground truth (test split, damaged crops; "
              "mean over seeds, sd, n_seeds)", tables.table5_notes(sal, t5))
        others = {f"segmenter {a}": np.load(ex / f"segmenter-{a}-s{first_seed}_saliency.npz")["segmenter"]
                  for a in params["segmenter"]["architectures"] if (ex / f"segmenter-{a}-s{first_seed}_saliency.npz").exists()}
        if (ex / "references_saliency.npz").exists():
            others["local contrast (no training)"] = np.load(ex / "references_saliency.npz")["local_contrast"]
        figures.fig4_saliency(dict(np.load(ex / f"{showcase}_saliency.npz")), fdir / "fig4_saliency.png",
                              f"Saliency of {showcase}: counterfactual vs Grad-CAM vs segmenters and references", others)
        figures.fig5_iou_quantiles(sal, fdir / "fig5_iou_quantiles.png")
        written += [fdir / "fig4_saliency.png", fdir / "fig5_iou_quantiles.png"]
    write_json(out / "metrics.json", metrics.headline(cls, rob, unc, sal))
    for attack in ("pgd", "noise"):
        write_csv(out / "plots" / f"{attack}.csv", metrics.sweep_table(rob, attack))
    written += [out / "metrics.json", out / "plots/pgd.csv", out / "plots/noise.csv"]
    return written
