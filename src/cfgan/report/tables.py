"""The paper's tables, drawn from the tidy evaluation CSVs only. Each is written as CSV and
as Markdown beside it.

Every table has one row per configuration (a run's name without its seed) and reports, per
metric, the mean over seeds, `<metric>_sd` (sample standard deviation; empty for one seed) and
`n_seeds`. The per-seed values stay in the tidy CSVs under evaluations/. On a multi-class data
set each table leads with `defect`, the defect class a row is about (one-vs-rest GANs, and the
class-agnostic models and references evaluated per class); binary tables have no such column."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..config import parse_run_name, run_defect, split_seed, with_defect
from ..metrics import NEARLY_ALL_PIXELS  # a light module: the report's code stays free of models
from ..io import write_csv, write_text


ALL_CLASSES = "all"  # the `defect` of a multi-class table's rows about every class at once


def with_config(frame: pd.DataFrame) -> pd.DataFrame:
    """Adds `config` (the run without `-s{seed}`), `seed` and `defect` (None on binary data)."""
    parts = frame["run"].map(split_seed)
    return frame.assign(config=parts.str[0], seed=parts.str[1], defect=frame["run"].map(run_defect))


def _by_defect(frame: pd.DataFrame, keys: list[str]) -> list[str]:
    """`keys`, led by `defect` where the rows name defect classes."""
    return (["defect"] if frame["defect"].notna().any() else []) + keys


def _gan_parts(frame: pd.DataFrame) -> pd.DataFrame:
    parts = frame["run"].map(parse_run_name)
    return with_config(frame).assign(generator=parts.str[0], discriminator=parts.str[1], cycles=parts.str[2])


def over_seeds(frame: pd.DataFrame, keys: list[str], metrics: list[str] | None = None) -> pd.DataFrame:
    """Mean, sd and number of seeds of `value` per (keys, metric), wide: metric, metric_sd, ..., n_seeds."""
    if metrics is not None:
        frame = frame[frame["metric"].isin(metrics)]
    if "defect" in keys:  # rows about every class at once (the multi-class decisions)
        frame = frame.assign(defect=frame["defect"].fillna(ALL_CLASSES))
    stats = frame.groupby(keys + ["metric"], dropna=False)["value"].agg(["mean", "std", "count"])
    mean, sd = stats["mean"].unstack("metric"), stats["std"].unstack("metric")
    order = [m for m in (metrics or sorted(mean.columns)) if m in mean.columns]
    out = pd.DataFrame(index=mean.index)
    for m in order:
        out[m] = mean[m]
        out[f"{m}_sd"] = sd[m]
    out["n_seeds"] = stats["count"].groupby(level=list(range(len(keys)))).max()
    return out.reset_index()


def _notes(frame: pd.DataFrame) -> str:
    notes = sorted(set(n for n in frame["note"].dropna().astype(str) if n))
    return "\n".join(f"- {n}" for n in notes)


def table1_fid(fid: pd.DataFrame) -> pd.DataFrame:
    full = _gan_parts(fid[fid["condition"] == "full"])
    return over_seeds(full, _by_defect(full, ["generator", "discriminator", "cycles"]), ["fid"])


def table3_fid_subsets(fid: pd.DataFrame) -> pd.DataFrame:
    f = _gan_parts(fid).rename(columns={"condition": "set"})
    return over_seeds(f, _by_defect(f, ["generator", "discriminator", "cycles", "set"]), ["fid"])


def multiclass_rows(mc: pd.DataFrame) -> pd.DataFrame:
    """The multi-class decisions' test rows for table 2: accuracy and macro F1 over all classes
    (defect `all`), and each defect class's F1 of the decision as that class's row."""
    test = mc[mc["condition"] == "test"]
    per_class = test[test["metric"].str.startswith("f1_") & (test["metric"] != "f1_undamaged")]
    per_class = per_class.assign(run=[with_defect(r, m.removeprefix("f1_")) for r, m in zip(per_class["run"], per_class["metric"])],
                                 metric="f1")
    return pd.concat([test[test["metric"].isin(["accuracy", "macro_f1"])], per_class], ignore_index=True)


def table2_classification(cls: pd.DataFrame, mc: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every classifier: D and G's head of each GAN configuration, the plain twins, and the
    trivial classifiers (run `references`) that a collapsed model would score like. Multi-class
    data: each of these per defect class (its task), and the multi-class decisions (`mc`) with
    their macro F1 over all classes (defect `all`) and per-class F1. `auroc`: the image-level ROC AUC
    of each binary classifier's damaged score (threshold-free; 0.5 for the trivial classifiers, whose
    constant score ranks nothing); the multi-class decisions have none."""
    metrics = ["accuracy", "f1", "precision", "recall", "auroc"]
    if mc is not None and not mc.empty:
        cls, metrics = pd.concat([cls, multiclass_rows(mc)], ignore_index=True), metrics + ["macro_f1"]
    c = with_config(cls)
    return over_seeds(c, _by_defect(c, ["config", "model"]), metrics)


TRIVIAL_MARGIN = 0.05  # an F1 within this of the best trivial classifier's is "at the trivial level"


def trivial_level_note(table2: pd.DataFrame) -> str:
    """One line (per defect class) when every learned classifier of the table scores an F1 at the
    trivial classifiers' level: then nothing was learned, whatever the other tables say."""
    lines = []
    groups = table2.groupby("defect", dropna=False) if "defect" in table2 else [(None, table2)]
    for defect, rows in groups:
        trivial = rows[rows["config"].str.startswith("references")]
        learned = rows[~rows["config"].str.startswith("references")].dropna(subset=["f1"])
        if trivial.empty or learned.empty:
            continue
        best_trivial, best = trivial["f1"].max(), learned["f1"].max()
        if best <= best_trivial + TRIVIAL_MARGIN:
            which = trivial.loc[trivial["f1"].idxmax(), "model"]
            lines.append(f"- FLAG{f' ({defect})' if defect is not None and defect == defect else ''}: every learned "
                         f"classifier scores at the trivial classifiers' level (best F1 {best:.3f}, {which} {best_trivial:.3f}): "
                         "nothing was learned (see the crop step's warnings and the runs' collapse flags)")
    return "\n".join(lines)


def table4_fakeness(unc: pd.DataFrame) -> pd.DataFrame:
    u = _gan_parts(unc).rename(columns={"model": "prediction_of"})
    return over_seeds(u, _by_defect(u, ["generator", "discriminator", "cycles", "prediction_of"]), ["pearson_r"])


# evaluate/threshold_free.py's METRICS, named here so the report's code stays free of the evaluation layer
THRESHOLD_FREE = ("pixel_auroc", "aupro_fpr30", "ods_tol2", "ois_tol2")


def table5_segmentation(sal: pd.DataFrame, cls: pd.DataFrame) -> pd.DataFrame:
    """IoU and f1_tol2 of every saliency method, the training-free references included; accuracy
    and F1 of the classifier behind a map (D for the GAN runs' maps, the segmenter's own 'mask
    not empty' call for the segmenters), and `coverage`, the fraction of pixels its masks select.

    IoU is given as both the median over crops (the paper's statistic) and the mean, the statistic
    the val threshold maximises (`cfgan.metrics.choose_threshold`), so the objective is read beside
    the headline. Then the threshold-free scores of the same test maps (evaluate/threshold_free.py):
    `pixel_auroc`, `aupro_fpr30` (AUPRO up to FPR 0.3, normalised), `ods_tol2` and `ois_tol2` (the
    crack benchmarks' F-measures at 2 px; their thresholds are picked on the test crops they score,
    so they bound, not replace, the val-chosen IoU and f1_tol2). ODS and OIS are reported for every
    masked data set, thin cracks and blob-like defects alike, rather than switched by a params key:
    one rule, and a reader of a blob data set ignores two columns. Evaluations from before these
    scores existed simply lack their columns.

    `explains`: the model whose maps a row scores (G, D, the plain `twin`, a segmenter; `none` for the
    training-free references), beside the classifier scores of D or the twin. `crops`: `all` damaged test
    crops, or the attribution `subset` (`evaluate.saliency.attribution_crops`), on which the Captum rows are
    drawn and every other row is scored again, so that rows are compared on the same crops (the notes give the
    numbers of crops and each row's cost per crop). `turns`: the number of the crop's flips and quarter turns
    its maps were averaged over, chosen on val (`evaluate.saliency.turns`; 1: one pass)."""
    d_cls = cls[cls["model"].isin(["D", "baseline"])][["run", "metric", "value"]]  # D's, or the twin's, own calls
    d_cls = d_cls[d_cls["metric"].isin(["accuracy", "f1"])]
    maps = sal[sal["metric"].isin(["iou_mean", "iou_median", "f1_tol2_mean", "f1_tol2_median", *THRESHOLD_FREE, "coverage",
                                   "accuracy", "f1", "turns"])]
    conditions = maps["condition"] if "condition" in maps else pd.Series("test", index=maps.index)
    maps = maps.assign(crops=conditions.map(lambda c: "subset" if str(c).endswith("_subset") else "all"))
    borrowed = maps[["run", "model", "crops"]].drop_duplicates().merge(d_cls, on="run")  # D's scores beside its maps
    has_own = maps[maps["metric"] == "f1"][["run", "model"]].drop_duplicates().assign(own=True)
    borrowed = borrowed.merge(has_own, on=["run", "model"], how="left")
    borrowed = borrowed[borrowed["own"].isna()].drop(columns="own")
    rows = pd.concat([maps[["run", "model", "crops", "metric", "value"]], borrowed], ignore_index=True)
    rows = with_config(rows).rename(columns={"model": "saliency"})
    rows = rows.assign(explains=[explained_model(r, m) for r, m in zip(rows["run"], rows["saliency"])])
    keys = _by_defect(rows, ["config", "saliency", "explains", "crops"])
    out = over_seeds(rows, keys, ["iou_median", "iou_mean", "f1_tol2_median", "f1_tol2_mean", *THRESHOLD_FREE,
                                  "coverage", "turns", "accuracy", "f1"])
    order = (["defect"] if keys[0] == "defect" else []) + ["crops", "iou_median"]
    return out.sort_values(order, ascending=[True] * (len(order) - 1) + [False], kind="stable").reset_index(drop=True)


def explained_model(run: str, method: str) -> str:
    """Whose maps a Table 5 row scores, from its run's name and its method (the saliency step's rows)."""
    if run.startswith("references"):
        return "none"
    for prefix, who in (("baseline-", "twin"), ("segmenter-", "segmenter"), ("posthoc-", "twin (post-hoc Gs, Ga)")):
        if run.startswith(prefix):
            return who
    return "G" if method.startswith("counterfactual") else "D"


def table5_notes(sal: pd.DataFrame, table: pd.DataFrame) -> str:
    """The threshold notes, then a line for every map that selects (nearly) every pixel."""
    flagged = table[table["coverage"] > NEARLY_ALL_PIXELS]
    lines = [f"- FLAG: {r.saliency} of {r.config} selects {r.coverage:.0%} of the pixels: an IoU of (nearly) "
             "all pixels, not a localisation" for r in flagged.itertuples()]
    return "\n".join([_notes(sal)] + lines)


DECISION = "decision"  # evaluate/adversarial_maps.py's method of the rows about the model's own calls
ADVERSARIAL_METRICS = ["map_iou", "map_iou_flipped", "flip_rate", "mask_iou_clean", "mask_iou_adv", "coverage_clean", "coverage_adv"]


def table6_adversarial_maps(adv: pd.DataFrame) -> pd.DataFrame:
    """How far each explainer's map moves from a test crop to its targeted PGD adversarial (evaluate/adversarial_maps.py),
    per method, step size and attacked model (`model`: D of a GAN configuration, or the plain `twin`), D's and the
    twin's rows side by side: `map_iou`, the IoU of the clean and the adversarial map binarised at the method's one
    threshold (1: unmoved), over the attacked crops; `map_iou_flipped` over those whose call the attack flipped;
    `flip_rate`, the model's own (the same for each of its methods); `mask_iou_clean` / `mask_iou_adv`, each map's
    IoU with the true masks of the damaged crops (data with masks only); the coverage of both masks. `explains`:
    whose maps (G's counterfactual explains D's adversarial crop; the post-hoc explainer the twin's)."""
    summary = adv[adv["condition"] == "test"]
    flips = summary[summary["metric"] == "flip_rate"][["run", "model", "strength", "value"]]
    maps = summary[summary["method"] != DECISION][["run", "model", "method", "strength", "metric", "value"]]
    borrowed = maps[["run", "model", "method", "strength"]].drop_duplicates().merge(flips, on=["run", "model", "strength"])
    rows = with_config(pd.concat([maps, borrowed.assign(metric="flip_rate")], ignore_index=True))
    rows = rows.assign(explains=[{"counterfactual": "G", "posthoc": "twin (post-hoc Gs, Ga)"}.get(m, who)
                                 for m, who in zip(rows["method"], rows["model"])])
    keys = _by_defect(rows, ["method", "strength", "model", "config", "explains"])
    return over_seeds(rows, keys, ADVERSARIAL_METRICS)


def write_table(frame: pd.DataFrame, path: Path, title: str, notes: str = "") -> None:
    write_csv(path, frame)
    body = frame.to_markdown(index=False, floatfmt=".3f")
    write_text(path.with_suffix(".md"), f"# {title}\n\n{body}\n" + (f"\n{notes}\n" if notes else ""))
