"""`cfgan report`: every table and figure of the paper for one data set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..config import grid_seeds, run_defect, run_name
from ..errors import UserError
from ..io import write_json, write_csv
from . import figures, metrics, tables


def _read(paths: list[Path]) -> pd.DataFrame:
    frames = [pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in paths]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _defects(cls: pd.DataFrame) -> list[str]:
    """The defect classes the evaluations name (multi-class data), in the order of the table rows."""
    return sorted({d for d in cls["run"].map(run_defect) if d})


def _examples(path: Path, defect: str | None, keys: tuple[str, ...]) -> dict:
    """Example arrays of one task from an examples file (keys tagged `__<class>` on multi-class data)."""
    tag = f"__{defect}" if defect else ""
    with np.load(path) as f:
        return {k: f[k + tag] for k in keys}


def _all_examples(path: Path, defect: str | None) -> dict:
    """Every array of one task from an examples file (keys tagged `__<class>` on multi-class data), untagged."""
    tag = f"__{defect}" if defect else ""
    with np.load(path) as f:
        return {k.removesuffix(tag): f[k] for k in f.files if (k.endswith(tag) if tag else "__" not in k)}


# What a method's maps were when the examples file names no choice: one candidate, or a file of older code
DEFAULT_FORMS = {"counterfactual": "abs", "gradcam": "per_crop"}


def _chosen_forms(path: Path, defects: list[str | None], method: str) -> list[str]:
    """The map forms a saliency examples file says were chosen on val; where it names none (a single candidate, or a
    file of older code), the method's default: the paper's abs, pytorch-grad-cam's per-crop scaling."""
    default = DEFAULT_FORMS.get(method, "abs")
    with np.load(path) as f:
        return sorted({str(f[key]) if (key := f"{method}_form" + (f"__{d}" if d else "")) in f else default for d in defects})


def build_report(params: dict, evaluations: Path, out: Path, params_files: list[str] | None = None) -> list[Path]:
    """Every table and figure of `evaluations` into `out`, and metrics.json: the headline numbers and their
    provenance (`params_files`: the command's --params, which name the experiment)."""
    ev = {kind: sorted((evaluations / kind).glob("*.csv")) for kind in
          ("fid", "classification", "robustness", "uncertainty", "saliency", "multiclass")}
    if not ev["classification"]:
        raise UserError(f"{evaluations}: no evaluation CSVs found (run the evaluation steps first)")
    fid, cls, rob, unc, sal, mc = (_read(ev[k]) for k in ("fid", "classification", "robustness", "uncertainty", "saliency",
                                                          "multiclass"))
    tdir, fdir = out / "tables", out / "figures"
    written = []

    def table(frame, name, title, notes=""):
        tables.write_table(frame, tdir / name, title, notes)
        written.append(tdir / name)

    table(tables.table1_fid(fid), "table1_fid.csv", "Table 1: FID of counterfactuals, full test set", tables._notes(fid))
    t2 = tables.table2_classification(cls, mc)
    table(t2, "table2_classification.csv",
          "Table 2: classification on the test split (mean over seeds, sd, n_seeds)" +
          ("; per defect class, and the multi-class decisions' macro F1 (defect `all`)" if not mc.empty else ""),
          "\n".join(filter(None, [tables.trivial_level_note(t2), tables._notes(pd.concat([cls, mc], ignore_index=True))])))
    table(tables.table3_fid_subsets(fid), "table3_fid_subsets.csv", "Table 3: FID on full / undamaged / damaged subsets (A.2)", tables._notes(fid))
    table(tables.table4_fakeness(unc), "table4_fakeness_correlation.csv",
          "Table 4: Pearson r between D's fake probability and the per-sample NLL (A.3)", tables._notes(unc))
    show = params["report"]["showcase"]
    first_seed = grid_seeds(params)[0]
    showcase = run_name(show["generator"], show["discriminator"], show["cycles"], first_seed)  # figures 2 and 4: one seed
    ex = evaluations / "examples"
    defects = _defects(cls)
    shown = [(d, run_name(show["generator"], show["discriminator"], show["cycles"], first_seed, d)) for d in defects] \
        or [(None, showcase)]
    figures.fig2_counterfactuals([(d or "", dict(np.load(ex / f"{run}_counterfactuals.npz"))) for d, run in shown],
                                 fdir / "fig2_counterfactuals.png",
                                 f"Counterfactuals of {showcase}" + (" (one GAN per defect class)" if defects else "")
                                 + " (test split)")
    refs = cls[cls["run"].str.startswith("references") & (cls["metric"] == "f1")]
    trivial = {m + r.removeprefix("references"): v for r, m, v in zip(refs["run"], refs["model"], refs["value"])}
    if mc.empty:
        figures.fig3_sweep(rob, "pgd", fdir / "fig3_pgd.png", "PGD step size (targeted, fixed iterations)", trivial)
        figures.fig3_sweep(rob, "noise", fdir / "fig3_noise.png", "Gaussian noise standard deviation", trivial)
    else:  # multi-class: the decisions over all classes (per-class sweeps stay in the evaluations and plots/)
        figures.fig3_sweep(mc, "pgd", fdir / "fig3_pgd.png", "PGD step size (untargeted, fixed iterations)", None, "macro_f1")
        figures.fig3_sweep(mc, "noise", fdir / "fig3_noise.png", "Gaussian noise standard deviation", None, "macro_f1")
    written += [fdir / "fig2_counterfactuals.png", fdir / "fig3_pgd.png", fdir / "fig3_noise.png"]
    if not sal.empty:
        t5 = tables.table5_segmentation(sal, cls)
        table(t5, "table5_segmentation.csv", "Table 5: saliency masks against ground truth (test split, damaged crops; "
              "mean over seeds, sd, n_seeds; IoU and f1_tol2 at the val-chosen threshold, which maximises the mean val IoU; "
              "pixel AUROC, AUPRO to FPR 0.3, ODS and OIS at 2 px need no threshold, ODS/OIS pick theirs on test by definition; "
              "`explains`: whose maps; `crops`: every damaged test crop, or the attribution subset every row is also scored "
              "on, compare within one; `turns`: flips and quarter turns averaged, chosen on val; costs per crop in the notes)",
              tables.table5_notes(sal, t5))
        sources = {f"segmenter {a}": (f"segmenter-{a}-s{first_seed}", "segmenter") for a in params["segmenter"]["architectures"]}
        sources["local contrast (no training)"] = ("references", "local_contrast")
        first_twin = params["grid"]["discriminators"][0]  # Charachon et al.'s explainer of it, where one was trained
        sources[f"post-hoc explainer of twin {first_twin}"] = (f"posthoc-{first_twin}-s{first_seed}", "posthoc")
        # one block of rows per defect class (its GAN's crops), or the one binary task
        gan = [_examples(ex / f"{run}_saliency.npz", d, ("x", "mask", "counterfactual", "gradcam")) for d, run in shown]
        others = {name: [_examples(ex / f"{file}_saliency.npz", d, (key,))[key] for d, _ in shown]
                  for name, (file, key) in sources.items() if (ex / f"{file}_saliency.npz").exists()}
        forms = {m: sorted({f for d, run in shown for f in _chosen_forms(ex / f"{run}_saliency.npz", [d], m)})
                 for m in ("counterfactual", "gradcam")}
        figures.fig4_saliency({k: np.concatenate([g[k] for g in gan]) for k in gan[0]}, fdir / "fig4_saliency.png",
                              f"Saliency of {showcase}" + (f" per defect class ({', '.join(defects)})" if defects else "")
                              + ": counterfactual vs Grad-CAM vs segmenters and references",
                              {name: np.concatenate(maps) for name, maps in others.items()},
                              [d for (d, _), g in zip(shown, gan) for _ in g["x"]] if defects else None, forms)
        figures.fig5_iou_quantiles(sal, fdir / "fig5_iou_quantiles.png")
        written += [fdir / "fig4_saliency.png", fdir / "fig5_iou_quantiles.png"]
    adv = _read(sorted((evaluations / "adversarial_maps").glob("*.csv")))
    if not adv.empty:  # the adversarial samples explained: every data set (the mask IoU only where there are masks)
        table(tables.table6_adversarial_maps(adv), "table6_adversarial_maps.csv",
              "Table 6: how far each explainer's map moves from a test crop to its targeted PGD adversarial, D vs its plain "
              "twin (mean over seeds, sd, n_seeds; map_iou: IoU of the clean and the adversarial map, each binarised at the "
              "method's one threshold, 1 = unmoved; flip_rate: the attacked model's calls the attack changed; mask_iou_*: "
              "each map's IoU with the true masks of the damaged crops)", tables._notes(adv))
        twin = f"baseline-{show['discriminator']}-s{first_seed}"
        task = shown[0][0]  # multi-class data: the first defect class's task
        panels = [(who, _all_examples(ex / f"{run}_adversarial_maps.npz", task)) for who, run in (("D", shown[0][1]), ("twin", twin))
                  if (ex / f"{run}_adversarial_maps.npz").exists()]
        if panels:
            figures.fig6_adversarial_maps(panels, fdir / "fig6_adversarial_maps.png",
                                          f"Maps of {shown[0][1]}'s D and of its plain twin {twin} on test crops (clean) and on their "
                                          "targeted PGD adversarials" + (f" ({task})" if task else ""))
            written.append(fdir / "fig6_adversarial_maps.png")
    showcase_config = run_name(show["generator"], show["discriminator"], show["cycles"])
    write_json(out / "metrics.json", {**metrics.headline(cls, rob, unc, sal), metrics.PROVENANCE: metrics.provenance(
        params_files, [fid, cls, rob, unc, sal, mc], showcase_config)})
    for attack in ("pgd", "noise"):
        write_csv(out / "plots" / f"{attack}.csv", metrics.sweep_table(rob, attack))
    written += [out / "metrics.json", out / "plots/pgd.csv", out / "plots/noise.csv"]
    return written
