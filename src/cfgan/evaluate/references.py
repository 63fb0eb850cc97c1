"""The training-free references, a "run" named `references` with no checkpoint: the trivial
classifiers (all damaged, all undamaged) and the reference saliency maps (local contrast, random,
all pixels), scored by exactly the rule the learned maps are scored by (`saliency_rows`, shared
with evaluate/run.py). Kept apart from the trained models' code, so that editing a loss or a
model does not invalidate these results. On a multi-class manifest each defect class is its own
task (its crops against the undamaged ones), its rows named `references-k{class}`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data.datasets import load_split, tasks
from ..errors import UserError
from ..metrics import NEARLY_ALL_PIXELS, binary_metrics, choose_form, choose_threshold
from . import saliency, threshold_free
from .tidy import tidy_frame

N_EXAMPLES = 4
REFERENCES = "references"


def saliency_rows(method: str, val_maps, val_masks, test_maps, test_split, tmask, quantiles, note: str):
    """Threshold chosen on val, per-crop and summary rows on test, for one method's maps, and the
    threshold-free scores of the same test maps (evaluate/threshold_free.py: pixel AUROC, AUPRO up to
    FPR 0.3, ODS and OIS at 2 px)."""
    t, val_iou = choose_threshold(val_maps, val_masks, quantiles)
    scores = saliency.score_test(test_maps[tmask], test_split.masks.numpy()[tmask], t)
    coverage = float(scores["coverage"].mean())
    note = f"{method}: threshold {t:.4g} (best of quantiles {quantiles} on {len(val_maps)} val damaged crops){note}"
    if coverage > NEARLY_ALL_PIXELS:
        note += f"; WARNING: its masks cover {coverage:.0%} of the pixels (nearly all): not a localisation"
    paths = np.array(test_split.paths)[tmask]
    rows = []
    for metric in ("iou", "f1_tol2"):
        rows += [{"model": method, "metric": metric, "condition": path, "value": v, "note": note}
                 for path, v in zip(paths, scores[metric])]
        rows += [{"model": method, "metric": f"{metric}_{stat}", "condition": "test", "value": float(fn(scores[metric])), "note": note}
                 for stat, fn in (("mean", np.mean), ("median", np.median))]
    free = threshold_free.map_scores(test_maps[tmask], test_split.masks.numpy()[tmask])
    rows += [{"model": method, "metric": k, "condition": "test", "value": v, "note": note} for k, v in free.items()]
    rows += [{"model": method, "metric": "threshold", "condition": "val", "value": t, "note": note},
             {"model": method, "metric": "val_iou", "condition": "val", "value": val_iou, "note": note},
             {"model": method, "metric": "coverage", "condition": "test", "value": coverage, "note": note}]
    return rows, t


def attribution_subset(damaged: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Positions (in manifest order) of at most `n` of a split's damaged crops (`damaged`: its boolean mask),
    drawn with `seed`: the crops every row is compared on when `evaluate.saliency.attribution_crops` is set
    (evaluate/model_maps.py). Only damaged crops are scored in Table 5, so undamaged ones are never drawn."""
    members = np.flatnonzero(damaged)
    if n >= len(members):
        return members
    return np.sort(np.random.default_rng(seed).choice(members, n, replace=False))


def subset_pair(vmask: np.ndarray, tmask: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """The val and test positions of the attribution subset (`attribution_subset`, seeds `seed` and `seed + 1`)
    and what a row's note says about it."""
    vsub, tsub = attribution_subset(vmask, n, seed), attribution_subset(tmask, n, seed + 1)
    return vsub, tsub, (f"; on the attribution subset: {len(vsub)} of {int(vmask.sum())} val and {len(tsub)} of "
                        f"{int(tmask.sum())} test damaged crops (evaluate.saliency.attribution_crops {n}, seed {seed})")


def on_subset(rows: list[dict]) -> list[dict]:
    """`saliency_rows` of the attribution subset, told apart from the full rows: conditions `val_subset`,
    `test_subset`, and `subset:<path>` per crop."""
    renamed = {"val": "val_subset", "test": "test_subset"}
    return [{**r, "condition": renamed.get(r["condition"], f"subset:{r['condition']}")} for r in rows]


def masked_splits(manifest: Path, defect: str | None = None):
    val, test = load_split(manifest, "val", defect=defect), load_split(manifest, "test", defect=defect)
    if test.masks is None:
        raise UserError(f"{manifest}: crops have no masks, so saliency IoU does not apply to this data set")
    return val, test, (val.labels == 1).numpy(), (test.labels == 1).numpy()


def run_classify_references(params, manifest: Path, dataset: str) -> pd.DataFrame:
    """The trivial classifiers on the test split: a collapsed model scores like one of these.
    A constant prediction does not change under PGD or noise, so this also is their sweep. Their
    `auroc` is 0.5 by construction (a constant score ranks no crop above another): the chance level
    Table 2's learned AUROCs are read against."""
    frames = []
    for defect, run in tasks(manifest, REFERENCES):
        y = load_split(manifest, "test", defect=defect).labels.numpy()
        rows = [{"model": name, "metric": k, "condition": "test", "value": v, "note": "predicts one class for every crop"}
                for name, constant in (("all_damaged", 1), ("all_undamaged", 0))
                for k, v in {**binary_metrics(y, np.full_like(y, constant)),
                             "auroc": threshold_free.image_auroc(y, np.full(len(y), float(constant)))}.items()]
        frames.append(tidy_frame(rows, dataset, run))
    return pd.concat(frames, ignore_index=True)


def run_saliency_references(params, manifest: Path, dataset: str, examples_out: Path) -> pd.DataFrame:
    """The training-free maps, scored by the same rule as every learned map: `local_contrast`
    (its polarity, dark / bright / both, chosen on val like the threshold), `random` and
    `all_pixels`. A 'run' named `references` with no checkpoint."""
    frames, examples = [], {}
    for defect, run in tasks(manifest, REFERENCES):
        rows, examples[defect] = _reference_maps(params, manifest, defect)
        frames.append(tidy_frame(rows, dataset, run))
    save_saliency_examples(examples_out, examples)
    return pd.concat(frames, ignore_index=True)


def local_contrast_pair(val, test, vmask, cfg: dict):
    """`local_contrast` maps of the val damaged crops and of every test crop, at the polarity
    (dark / bright / both) that scores best on val, and that polarity."""
    lc = cfg["local_contrast"]
    candidates = {p: saliency.local_contrast_maps(val.images[vmask], lc["sigma_narrow"], lc["sigma_wide"], p)
                  for p in saliency.POLARITIES}
    polarity = choose_form(candidates, val.masks.numpy()[vmask], cfg["quantiles"])
    return candidates[polarity], saliency.local_contrast_maps(test.images, lc["sigma_narrow"], lc["sigma_wide"], polarity), polarity


def _reference_maps(params, manifest: Path, defect: str | None):
    cfg = params["evaluate"]["saliency"]
    val, test, vmask, tmask = masked_splits(manifest, defect)
    lc = cfg["local_contrast"]
    val_masks = val.masks.numpy()[vmask]
    lc_val, lc_test, polarity = local_contrast_pair(val, test, vmask, cfg)
    shape = tuple(test.images.shape[:1]) + tuple(test.images.shape[2:])
    methods = {
        "local_contrast": (lc_val, lc_test, f"; blur {lc['sigma_narrow']} vs {lc['sigma_wide']} px, polarity '{polarity}' chosen on val"),
        "random": (saliency.random_maps(val_masks.shape, params["seed"]), saliency.random_maps(shape, params["seed"] + 1),
                   "; uniform noise: the chance level"),
        "all_pixels": (saliency.all_pixel_maps(val_masks.shape), saliency.all_pixel_maps(shape), "; every pixel: the degenerate mask"),
    }
    rows, example_maps = [], {}
    for method, (val_maps, test_maps, note) in methods.items():
        rows += saliency_rows(method, val_maps, val_masks, test_maps, test, tmask, cfg["quantiles"], note)[0]
        example_maps[method] = test_maps
    if cfg.get("attribution_crops") is not None:  # the same crops as the attribution rows (evaluate/model_maps.py)
        rows += _subset_rows(params, val, test, vmask, tmask, methods)
    return rows, (test, example_maps)


def _subset_rows(params, val, test, vmask, tmask, methods: dict) -> list[dict]:
    """The references on the attribution subset, each choice (polarity, threshold) made again on its val crops."""
    cfg, seed = params["evaluate"]["saliency"], params["seed"]
    vsub, tsub, subset_note = subset_pair(vmask, tmask, cfg["attribution_crops"], seed)
    at = np.searchsorted(np.flatnonzero(vmask), vsub)  # the subset among the val damaged crops
    lc = cfg["local_contrast"]
    candidates = {p: saliency.local_contrast_maps(val.images[vsub], lc["sigma_narrow"], lc["sigma_wide"], p) for p in saliency.POLARITIES}
    masks = val.masks.numpy()[vsub]
    polarity = choose_form(candidates, masks, cfg["quantiles"])
    subset = {**{m: (v[at], t[tsub], note) for m, (v, t, note) in methods.items()},
              "local_contrast": (candidates[polarity], saliency.local_contrast_maps(test.images[tsub], lc["sigma_narrow"], lc["sigma_wide"], polarity),
                                 f"; blur {lc['sigma_narrow']} vs {lc['sigma_wide']} px, polarity '{polarity}' chosen on val")}
    rows = []
    for method, (val_maps, test_maps, note) in subset.items():
        rows += on_subset(saliency_rows(method, val_maps, masks, test_maps, test.subset(torch.as_tensor(tsub)), np.ones(len(tsub), bool),
                                        cfg["quantiles"], note + subset_note)[0])
    return rows


def save_saliency_examples(path: Path, tasks_maps: dict) -> None:
    """The first damaged test crops of each task with every method's maps on them: keys `x`,
    `mask`, `<method>` for binary data; with `__<class>` appended per defect class otherwise. A string
    value (`<method>_form`: the map form chosen on val) is stored as it is."""
    arrays = {}
    for defect, (test, maps) in tasks_maps.items():
        idx = torch.nonzero(test.labels == 1).flatten()[:N_EXAMPLES].numpy()
        tag = f"__{defect}" if defect else ""
        arrays.update({f"x{tag}": test.images[idx].numpy(), f"mask{tag}": test.masks[idx].numpy(),
                       **{f"{name}{tag}": np.array(m) if isinstance(m, str) else m[idx] for name, m in maps.items()}})
    np.savez_compressed(path, **arrays)
