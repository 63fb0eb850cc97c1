"""Val curves of GAN runs trained with `train.val_maps` or `train.val_pgd`: the maps' val IoU, the
label-only selection score and D's val F1 under each logged PGD step size, per validation step, one
line per run (seeds of one variant share a colour and get a band), with references (training-free
maps, a plain twin under the same attack) as horizontal lines. Prints the table it draws, and for
each run with a maps curve the step each selection rule keeps and the maps' val IoU there.

    python benchmarks/val_curves.py --log crackforest=results/val_curve/*/log.csv \
        --reference local_contrast=0.353 --out docs/fig_val_curves.png
    python benchmarks/val_curves.py --log apples=results/val_apples_pgd/*/log.csv \
        --reference "val_f1_d_pgd=0.002:twin=0.49" --out docs/fig_val_pgd_apples.png

`--log LABEL=GLOB` (repeatable): the runs' log.csv files under one label (a variant). Only the
train and val splits were read by the runs; this script reads nothing else (`--manifest` reads the
val split's labels, to count its crops).

Logs written before 2026-12-05 lack D's val balanced accuracy (`val_bacc_d`), which the flag for a G
head near chance needs; `--manifest` rebuilds it from the logged F1 and damaged rate of D and the val
split's counts (exact up to rounding), so those logs are replayed under today's collapse flags.
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

import pandas as pd

from cfgan.train.selection import StepKeeper

PANELS = {"val_map_iou": "maps' val IoU (best form)", "val_score": "selection score (labels only)"}
PGD = "val_f1_d_pgd="  # train.val_pgd's columns: D's val F1 under PGD at one step size


def panels(curves: pd.DataFrame) -> dict[str, str]:
    """The columns to draw, with their titles: the maps (where logged), the score, each PGD step size."""
    shown = {c: t for c, t in PANELS.items() if c in curves}
    shown.update({c: f"D's val F1 under PGD, step {c.removeprefix(PGD)}" for c in curves if c.startswith(PGD)})
    return shown


def read_curves(logs: list[str]) -> pd.DataFrame:
    """The validation rows of every --log file, with its label and run (its folder name)."""
    frames = []
    for item in logs:
        label, sep, pattern = item.partition("=")
        paths = sorted(glob.glob(pattern)) if sep else []
        if not paths:
            raise SystemExit(f"--log {item}: expected LABEL=GLOB matching at least one log.csv")
        for path in paths:
            log = pd.read_csv(path).dropna(subset=["val_score"])
            if "val_map_iou" not in log and not any(c.startswith(PGD) for c in log):
                raise SystemExit(f"{path}: no curve to draw (no val_map_iou or {PGD}* column): "
                                 "train the run with train.val_maps or train.val_pgd")
            frames.append(log.assign(label=label, run=Path(path).parent.name))
    return pd.concat(frames, ignore_index=True)


def with_bacc_d(curve: pd.DataFrame, manifest: str) -> pd.DataFrame:
    """`val_bacc_d` rebuilt where a log lacks it: from D's F1 and its damaged rate on the val split
    of `manifest` (n crops, p damaged), TP = F1 (p + predicted) / 2."""
    if "val_bacc_d" in curve and curve["val_bacc_d"].notna().all():
        return curve
    split = pd.read_csv(manifest)
    if not {"split", "label"} <= set(split.columns):
        raise SystemExit(f"--manifest {manifest}: expected the columns split and label")
    val = split[split["split"] == "val"]
    n, p = len(val), int((val["label"] == 1).sum())
    if not 0 < p < n:
        raise SystemExit(f"--manifest {manifest}: its val split needs damaged and undamaged crops (has {p} of {n} damaged)")
    predicted = (curve["val_damaged_rate_d"] * n).round()
    tp = (curve["val_f1_d"] * (p + predicted) / 2).round()
    rebuilt = (tp / p + (n - p - (predicted - tp)) / (n - p)) / 2
    return curve.assign(val_bacc_d=curve["val_bacc_d"].fillna(rebuilt) if "val_bacc_d" in curve else rebuilt)


def selected(curve: pd.DataFrame, column: str, tolerance: float = 0.0) -> pd.Series:
    """The row the training loop keeps when it selects on `column` (with train.val_maps.tolerance):
    the same keeper, fed the logged rows in order."""
    keeper = StepKeeper(column, tolerance)
    for i, row in enumerate(curve.to_dict("records")):
        keeper.offer(row["step"], row, lambda i=i: {"index": i})
    return curve.iloc[keeper.kept()["index"]]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log", action="append", required=True, help="LABEL=GLOB of log.csv files (repeatable)")
    ap.add_argument("--reference", action="append", default=[],
                    help="[COLUMN:]NAME=VALUE, a horizontal line on COLUMN's panel (default val_map_iou), "
                         "e.g. local_contrast=0.353 or val_f1_d_pgd=0.002:twin=0.49")
    ap.add_argument("--tolerance", type=float, default=0.0,
                    help="also print the step train.val_maps.tolerance would keep (select on maps with this tolerance)")
    ap.add_argument("--manifest", help="the runs' manifest.csv: rebuild D's val balanced accuracy for logs without it")
    ap.add_argument("--out", required=True, help="the figure (.png)")
    args = ap.parse_args(argv)
    curves = read_curves(args.log)
    if args.manifest:
        curves = with_bacc_d(curves, args.manifest)
    shown = panels(curves)
    refs: dict[str, dict[str, float]] = {}
    for item in args.reference:
        column, _, named = item.rpartition(":")
        name, _, value = named.partition("=")
        column = column or "val_map_iou"
        try:
            refs.setdefault(column, {})[name] = float(value)
        except ValueError:
            raise SystemExit(f"--reference {item}: expected [COLUMN:]NAME=NUMBER") from None
        if column not in shown:
            raise SystemExit(f"--reference {item}: no panel {column} (the logs have: {', '.join(shown)})")
    print(curves[["label", "run", "step", *shown, *(["val_map_form"] if "val_map_iou" in shown else [])]]
          .round(3).to_string(index=False))
    for (label, run), curve in curves.groupby(["label", "run"], sort=False):
        if "val_map_iou" not in curve or curve["val_map_iou"].isna().all():
            continue  # no maps curve: no selection rule on it to replay
        by_score, by_maps = selected(curve, "val_score"), selected(curve, "val_map_iou")
        line = (f"{label} {run}: val_score keeps step {by_score['step']:.0f} (maps {by_score['val_map_iou']:.3f}); "
                f"select on maps keeps step {by_maps['step']:.0f} (maps {by_maps['val_map_iou']:.3f})")
        if args.tolerance:
            by_tol = selected(curve, "val_map_iou", args.tolerance)
            line += (f"; with tolerance {args.tolerance:g}, step {by_tol['step']:.0f} "
                     f"(maps {by_tol['val_map_iou']:.3f}, score {by_tol['val_score']:.3f})")
        print(line)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 3.6), squeeze=False)
    for ax, (column, title) in zip(axes[0], shown.items()):
        sns.lineplot(data=curves, x="step", y=column, hue="label", errorbar="sd", marker="o", ax=ax)
        for name, value in refs.get(column, {}).items():
            ax.axhline(value, color="grey", linestyle="--", linewidth=1)
            ax.annotate(name, (curves["step"].min(), value), textcoords="offset points", xytext=(0, 3), fontsize=8, color="grey")
        ax.set(title=title, xlabel="GAN step", ylabel="")
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")  # whole or not at all
    fig.savefig(tmp, dpi=110)
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
