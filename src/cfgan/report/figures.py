"""The paper's figures (seaborn / matplotlib), drawn from evaluation CSVs and example arrays."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ..config import split_seed  # noqa: E402
from ..io import atomic_path  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, bbox_inches="tight", format="png")
    plt.close(fig)


def _img(a: np.ndarray) -> np.ndarray:
    return a.transpose(1, 2, 0) if a.ndim == 3 and a.shape[0] == 3 else a


def fig2_counterfactuals(groups: list[tuple[str, dict]], path: Path, title: str) -> None:
    """Input, counterfactual and |x - G(x)| for each group of examples (one group: binary data;
    one per defect class: its one-vs-rest GAN), three rows per group."""
    n = max(len(ex["x"]) for _, ex in groups)
    fig, axes = plt.subplots(3 * len(groups), n, figsize=(1.6 * n, 5 * len(groups)), squeeze=False)
    for gi, (group, examples) in enumerate(groups):
        x, x_cf, labels = examples["x"], examples["x_cf"], examples["labels"]
        diffs = np.abs(x.astype(float) - x_cf.astype(float)).mean(1) / 255
        vmax = max(float(diffs.max()), 1e-6)  # one scale for the row, so small changes look small
        for i in range(n):
            for r, (name) in enumerate(("input", "counterfactual", f"|x - G(x)| (0 to {vmax:.2f})")):
                ax = axes[3 * gi + r, i]
                ax.set_xticks([]); ax.set_yticks([])
                if i >= len(x):
                    ax.axis("off")
                    continue
                im = (_img(x[i]), _img(x_cf[i]), diffs[i])[r]
                ax.imshow(im, cmap="magma" if r == 2 else None, vmin=0 if r == 2 else None, vmax=vmax if r == 2 else None)
                if i == 0:
                    ax.set_ylabel(f"{group}\n{name}" if group else name, fontsize=8)
            if i < len(x):
                axes[3 * gi, i].set_title((group or "damaged") if labels[i] else "undamaged", fontsize=8)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def fig3_sweep(rob: pd.DataFrame, attack: str, path: Path, xlabel: str, trivial: dict[str, float] | None = None,
               metric: str = "f1") -> None:
    """F1 (multi-class data: macro F1 of the multi-class decisions) against attack strength per
    configuration: the line is the mean over seeds, the band one standard deviation; the trivial
    classifiers' F1 (constant under any attack) dotted."""
    r = rob[rob["condition"].str.startswith(attack + "=")].copy()
    r["strength"] = r["condition"].str.split("=").str[1].astype(float)
    r["model_run"] = r["run"].map(lambda run: split_seed(run)[0]) + " (" + r["model"] + ")"
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=r[r["metric"] == metric], x="strength", y="value", hue="model_run", marker="o", errorbar="sd", ax=ax)
    for i, (name, f1) in enumerate(sorted((trivial or {}).items())):
        ax.axhline(f1, color="grey", linestyle=":", linewidth=1)
        ax.annotate(f"{name} F1 {f1:.2f}", (0.01, f1), xycoords=("axes fraction", "data"), fontsize=6, color="grey",
                    va="bottom")
    fake = r[r["metric"] == "mean_p_fake"]
    if not fake.empty:
        ax2 = ax.twinx()
        sns.lineplot(data=fake, x="strength", y="value", hue="model_run", linestyle="--", marker="x", errorbar=None, ax=ax2,
                     legend=False)
        ax2.set_ylabel("mean p_fake (dashed)")
        ax2.set_ylim(0, 1)
    n = r.groupby("model_run")["run"].nunique().max()
    label = "macro F1" if metric == "macro_f1" else "F1"
    ax.set_xlabel(xlabel); ax.set_ylabel(f"{label} (solid; mean of {n} seed(s), band: sd)"); ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.12, 1.0))
    _save(fig, path)


FORM_LABELS = {"abs": "|x-G(x)|", "dark": "darker than G(x)", "bright": "brighter than G(x)", "both": "|grey(x-G(x))|",
               "per_crop": "per-crop min-max", "absolute": "absolute"}


def _form_label(forms: list[str]) -> str:
    labels = []
    for name in forms:
        f, _, turns = name.partition("+turns")  # a form chosen with evaluate.saliency.turns (cfgan.maps.candidate_name)
        labels.append(FORM_LABELS.get(f.removesuffix("-decast"), f) + (" decast" if f.endswith("-decast") else "")
                      + (f", mean of {turns} turns" if turns else ""))
    return ", ".join(labels)


def method_scale(maps: list[np.ndarray]) -> tuple[float, float]:
    """One (vmin, vmax) for all of a method's maps in a figure: their range over every crop shown."""
    values = np.concatenate([np.asarray(m, dtype=float).ravel() for m in maps])
    values = values[np.isfinite(values)]
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    return lo, max(hi, lo + 1e-6)


def fig4_saliency(examples: dict, path: Path, title: str, segmenters: dict[str, np.ndarray] | None = None,
                  row_labels: list[str] | None = None, forms: dict[str, list[str]] | None = None) -> None:
    """Input, ground truth, the GAN's counterfactual map, Grad-CAM on its D, and (when given)
    the supervised segmenters' probability maps on the same crops. `forms`: the map form (and
    Grad-CAM scaling) each column shows, as chosen on val; absent: the paper's |x - G(x)|.

    Each method's maps are drawn on one colour scale, its range over the crops shown (named in the
    column's title), never stretched per crop: a per-crop min-max would paint a near-identity G's
    noise as brightly as a real change, the reading the text rejects (one absolute threshold per
    method, never one relative to each map's maximum)."""
    x, mask = examples["x"], examples["mask"]
    forms = {"counterfactual": ["abs"], "gradcam": ["per_crop"], **(forms or {})}
    cols = [("input", lambda i: _img(x[i]), None), ("ground truth", lambda i: mask[i], "gray"),
            ("counterfactual" + (" " if forms["counterfactual"] == ["abs"] else "\n") + _form_label(forms["counterfactual"]),
             lambda i: examples["counterfactual"][i], "magma"),
            ("Grad-CAM" + ("" if forms["gradcam"] == ["per_crop"] else f"\n{_form_label(forms['gradcam'])}"),
             lambda i: examples["gradcam"][i], "magma")]
    for name, maps in (segmenters or {}).items():
        cols.append((name, lambda i, m=maps: m[i], "magma"))
    scales = [method_scale([get(i) for i in range(len(x))]) if cmap == "magma" else (0.0, 1.0) if cmap else (None, None)
              for _, get, cmap in cols]  # the input is RGB; the ground truth a 0/1 mask
    cols = [(f"{name}\n(scale {lo:.3g} to {hi:.3g})" if cmap == "magma" else name, get, cmap)
            for (name, get, cmap), (lo, hi) in zip(cols, scales)]
    fig, axes = plt.subplots(len(x), len(cols), figsize=(2.1 * len(cols), 1.9 * len(x)), squeeze=False)
    for i in range(len(x)):
        for j, (name, get, cmap) in enumerate(cols):
            axes[i, j].imshow(get(i), cmap=cmap, vmin=scales[j][0], vmax=scales[j][1])
            axes[i, j].set_xticks([]); axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(name, fontsize=8)
        if row_labels:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def _outline(ax, mask: np.ndarray, colour: str) -> None:
    """The edge of a binary mask (nothing to draw where it is empty or full)."""
    mask = np.asarray(mask, bool)
    if mask.any() and not mask.all():
        ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=0.5)


def fig6_adversarial_maps(panels: list[tuple[str, dict]], path: Path, title: str) -> None:
    """Test crops and their targeted PGD adversarials (the largest step size) with each explainer's maps of both,
    one pair of rows (clean, adversarial) per attacked model (`panels`: [(name, the adversarial-maps step's examples)],
    D's and the twin's, on the same crops). One colour scale per method over every map shown (named in the column's
    title), never stretched per crop; the cyan outline is the mask the map becomes at its val-chosen threshold, the
    green one the true mask (damaged crops of data with masks)."""
    methods = list(dict.fromkeys(str(m) for _, ex in panels for m in ex["methods"]))
    strength = max(float(s) for s in panels[0][1]["strengths"])
    key = f"@{strength:g}"
    scales = {m: method_scale([ex[k] for _, ex in panels for k in (m, m + key) if k in ex]) for m in methods}
    n = len(panels[0][1]["x"])
    fig, axes = plt.subplots(2 * len(panels) * n, 1 + len(methods), figsize=(1.8 * (1 + len(methods)), 1.6 * 2 * len(panels) * n),
                             squeeze=False)
    for i in range(n):
        for p, (name, ex) in enumerate(panels):
            for a, suffix in enumerate(("", key)):
                r = (i * len(panels) + p) * 2 + a
                x = ex["x" + suffix][i]
                image = _img(x.astype(float) / 255 if suffix == "" else x)
                axes[r, 0].imshow(np.clip(image, 0, 1))
                if "mask" in ex and ex["labels"][i]:
                    _outline(axes[r, 0], ex["mask"][i], "lime")
                call = "damaged" if ex["pred" + suffix][i] else "undamaged"
                flip = " (flipped)" if suffix and ex["pred" + suffix][i] != ex["pred"][i] else ""
                label = ("damaged" if ex["labels"][i] else "undamaged") + " crop"
                axes[r, 0].set_ylabel(f"{label}\n{name} {'clean' if not suffix else f'PGD {strength:g}'}\ncalls {call}{flip}",
                                      fontsize=7)
                for j, m in enumerate(methods, 1):
                    ax = axes[r, j]
                    ax.set_xticks([]); ax.set_yticks([])
                    if m + suffix not in ex:
                        ax.axis("off")
                        continue
                    ax.imshow(ex[m + suffix][i], cmap="magma", vmin=scales[m][0], vmax=scales[m][1])
                    _outline(ax, ex[m + suffix][i] >= float(ex[f"{m}_threshold"]), "cyan")
                axes[r, 0].set_xticks([]); axes[r, 0].set_yticks([])
    axes[0, 0].set_title("crop", fontsize=8)
    for j, m in enumerate(methods, 1):
        who = {"counterfactual": " (G)", "posthoc": " (twin's)"}.get(m, "")
        axes[0, j].set_title(f"{m.replace('_', ' ')}{who}\n(scale {scales[m][0]:.2g} to {scales[m][1]:.2g})", fontsize=7)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def fig5_iou_quantiles(sal: pd.DataFrame, path: Path) -> None:
    """IoU at each quantile of the damaged test crops, per method and configuration: the line is
    the mean of the per-seed quantile curves, the band their standard deviation. A method drawn only on the
    attribution subset (evaluate.saliency.attribution_crops) is shown on its crops, labelled `subset`; the
    subset's rescoring of the other methods stays in table 5."""
    per_image = sal[sal["metric"] == "iou"]
    on_subset = per_image["condition"].astype(str).str.startswith("subset:")
    full = per_image[~on_subset]
    drawn = set(zip(full["run"], full["model"]))
    subset_only = per_image[on_subset & [(r, m) not in drawn for r, m in zip(per_image["run"], per_image["model"])]]
    rows = []
    for (run, method), grp in pd.concat([full, subset_only.assign(model=subset_only["model"] + ", subset")]).groupby(["run", "model"]):
        config = split_seed(run)[0]
        for q in np.linspace(0, 1, 21):
            rows.append({"series": f"{method} ({config})", "seed_run": run, "quantile": q,
                         "iou": float(np.quantile(grp["value"], q))})
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=pd.DataFrame(rows), x="quantile", y="iou", hue="series", marker=".", errorbar="sd", ax=ax)
    ax.set_ylim(0, 1); ax.set_ylabel("IoU at quantile (band: sd over seeds)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    _save(fig, path)
