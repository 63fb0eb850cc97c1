"""Threshold-free scores (evaluate/threshold_free.py) on hand-computed cases, and their place in the
saliency step's tidy rows and in Tables 2 and 5."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage

from cfgan.data.datasets import Split
from cfgan.evaluate import threshold_free as tf
from cfgan.evaluate.references import saliency_rows
from cfgan.evaluate.saliency import tolerant_f1
from cfgan.report import tables

SCORES, LABELS = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]   # 3 of the 4 (positive, negative) pairs ranked right


def test_image_auroc_known_scores_and_undefined_cases():
    assert tf.image_auroc(LABELS, SCORES) == pytest.approx(0.75)
    assert tf.image_auroc(LABELS, [0.5] * 4) == pytest.approx(0.5)      # a trivial classifier: chance
    assert tf.image_auroc([1, 1, 0], [0.1, 0.2, 0.9]) == pytest.approx(0.0)
    assert np.isnan(tf.image_auroc([1, 1], [0.2, 0.3]))                   # one class: undefined


def test_pixel_auroc_of_a_tiny_map():
    maps = np.array(SCORES).reshape(1, 2, 2)
    masks = np.array(LABELS, bool).reshape(1, 2, 2)
    assert tf.pixel_auroc(maps, masks) == pytest.approx(0.75)
    assert tf.pixel_auroc(np.concatenate([maps, maps]), np.concatenate([masks, masks])) == pytest.approx(0.75)  # pooled


def test_pixel_auroc_matches_scikit_learn_with_ties_and_the_shared_sort():
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(1)
    maps = np.round(rng.random((3, 9, 9)), 1)          # eleven values: many ties
    masks = rng.random((3, 9, 9)) < maps * 0.6
    assert tf.pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    scores = tf.map_scores(maps, masks)                 # one sort for the pooled scores
    assert scores["pixel_auroc"] == pytest.approx(tf.pixel_auroc(maps, masks))
    assert scores["aupro_fpr30"] == pytest.approx(tf.aupro(maps, masks))
    assert (scores["ods_tol2"], scores["ois_tol2"]) == pytest.approx(tf.ods_ois(maps, masks))
    assert np.isnan(tf.pixel_auroc(maps, np.zeros_like(masks)))


def _two_regions():
    """One 1 x 16 crop: region A (cols 0-1, 2 px), region B (cols 3-6, 4 px), 10 mask-free pixels.
    Descending thresholds: 0.9 covers A (PRO 1/2, FPR 0); 0.8 half of B (PRO 3/4); 0.7 a first
    mask-free pixel (FPR 0.1); 0.6 the rest of B (PRO 1); 0.5 a second mask-free pixel (FPR 0.2); 0
    the other 8 (FPR 1). Area to FPR 0.3: 0.1 * 3/4 + 0.2 * 1 = 0.275, normalised 0.275 / 0.3 = 11/12.
    (Pixel-wise the recall at FPR 0 would be 4/6, not 3/4: each region weighs the same.)"""
    mask = np.zeros((1, 1, 16), bool)
    mask[0, 0, [0, 1, 3, 4, 5, 6]] = True
    m = np.zeros((1, 1, 16))
    m[0, 0, [0, 1]] = 0.9
    m[0, 0, [3, 4]] = 0.8
    m[0, 0, [5, 6]] = 0.6
    m[0, 0, 2], m[0, 0, 7] = 0.7, 0.5
    return m, mask


def test_aupro_of_two_regions_by_hand():
    maps, masks = _two_regions()
    fpr, pro = tf.pro_curve(maps, masks)
    assert fpr.tolist() == pytest.approx([0, 0, 0, 0.1, 0.1, 0.2, 1.0, 1.0])
    assert pro.tolist() == pytest.approx([0, 0.5, 0.75, 0.75, 1.0, 1.0, 1.0, 1.0])
    assert tf.aupro(maps, masks) == pytest.approx(11 / 12)
    assert tf.aupro(maps, masks, fpr_limit=0.1) == pytest.approx(0.75)


def test_aupro_interpolates_at_the_limit_and_reads_8_connected_regions():
    masks = np.zeros((1, 8, 8), bool)
    masks[0, 2:4, 2:4] = True
    assert tf.aupro(np.ones((1, 8, 8)), masks) == pytest.approx(0.15)  # one step (0,0) -> (1,1): 0.3 * 0.3 / 2 / 0.3
    rng = np.random.default_rng(0)
    assert tf.aupro(rng.random((4, 32, 32)), np.repeat(masks, 4, 0).repeat(4, 1).repeat(4, 2)) == pytest.approx(0.15, abs=0.03)
    diagonal = np.zeros((1, 3, 3), bool)
    diagonal[0, [0, 1, 1], [0, 1, 2]] = True      # (0,0) touches (1,1) at a corner only: one region of 3 px
    m = np.zeros((1, 3, 3)); m[0, 0, 0] = 1.0      # covers a third of it (4-connected: half the regions)
    fpr, pro = tf.pro_curve(m, diagonal)
    assert (fpr[1], pro[1]) == pytest.approx((0.0, 1 / 3))
    assert np.isnan(tf.aupro(m, np.zeros_like(diagonal)))      # no region: undefined


def _line(col, size=12):
    a = np.zeros((1, size, size))
    a[0, :, col] = 1.0
    return a


def test_ods_ois_one_pixel_off_is_found_three_pixels_off_is_not():
    gt = _line(5).astype(bool)
    assert tf.ods_ois(_line(6), gt) == pytest.approx((1.0, 1.0))     # within 2 px: every pixel matched
    assert tolerant_f1(_line(6)[0] > 0, gt[0]) == 1.0 and tolerant_f1(_line(8)[0] > 0, gt[0]) == 0.0
    # 3 px off: F 0 at the line's own threshold; the best threshold is then every pixel, whose
    # precision is the 5 columns within 2 px of the truth (cols 3-7) of 12, recall 1: F = 10/17
    assert tf.ods_ois(_line(8), gt) == pytest.approx((10 / 17, 10 / 17))


def test_ods_pools_one_threshold_ois_takes_each_crops_own():
    """Two crops, both right on their own scale: crop 1's line at 0.9 on 0, crop 2's at 1.0 on 0.95.
    One threshold for both: 1.0 finds crop 2's line only (P 1, R 1/2: F 2/3); 0.95 adds crop 2's
    background (P 60/144, R 1/2); 0.9 adds crop 1's line (P 72/156, R 1: F 144/228); 0 every pixel
    (P 120/288, R 1). ODS 2/3; each crop at its own best threshold scores 1, so OIS 1."""
    gt = np.concatenate([_line(5), _line(5)]).astype(bool)
    maps = np.concatenate([_line(5) * 0.9, _line(5) * 0.05 + 0.95])
    assert tf.ods_ois(maps, gt) == pytest.approx((2 / 3, 1.0))


def _brute_force(maps, masks, tol=2):
    """Tolerant F at every distinct value, from distance transforms (an independent matching)."""
    near = np.stack([ndimage.distance_transform_edt(~m) <= tol for m in masks])
    def counts(t):
        pred = maps >= t
        reach = np.stack([ndimage.distance_transform_edt(~p) <= tol if p.any() else np.zeros_like(p) for p in pred])
        return (pred & near).sum((1, 2)), pred.sum((1, 2)), (masks & reach).sum((1, 2)), masks.sum((1, 2))
    def f(c, p, r, g):
        prec, rec = (c / p if p else 0.0), r / g
        return 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)
    per_t = [counts(t) for t in np.unique(maps)]
    ods = max(f(*(x.sum() for x in c)) for c in per_t)
    ois = np.mean([max(f(*(x[i] for x in c)) for c in per_t) for i in range(len(maps))])
    return ods, ois


def test_ods_ois_match_a_brute_force_with_distance_transforms_and_tolerant_f1():
    rng = np.random.default_rng(3)
    masks = np.zeros((3, 16, 16), bool)
    masks[0, 7, 2:14] = True; masks[1, 3:12, 10] = True; masks[2, range(2, 9), range(2, 9)] = True
    maps = np.round(0.3 * masks + rng.random(masks.shape), 2)   # a weak signal in noise, 2 decimals: ties
    ods, ois = tf.ods_ois(maps, masks)
    assert 0.3 < ods < 1 and 0.3 < ois < 1
    assert (ods, ois) == pytest.approx(_brute_force(maps, masks))
    best = [max(tolerant_f1(m >= t, k) for t in np.unique(m)) for m, k in zip(maps, masks)]
    assert ois == pytest.approx(np.mean(best))


def _sal_split():
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[1, 3, :] = True; masks[3, :, 4] = True
    labels = torch.tensor([0, 1, 0, 1])
    return Split(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), labels, masks, [f"c{i}.png" for i in range(4)])


def test_saliency_rows_carry_the_threshold_free_scores_of_the_damaged_test_crops():
    test = _sal_split()
    tmask = (test.labels == 1).numpy()
    maps = test.masks.numpy() * 1.0 + 0.1 * np.random.default_rng(0).random((4, 8, 8))
    rows, _ = saliency_rows("counterfactual", maps[tmask], test.masks.numpy()[tmask], maps, test, tmask, [0.5, 0.9], "")
    got = {r["metric"]: r["value"] for r in rows if r["condition"] == "test"}
    assert set(tf.METRICS) <= set(got) and {"iou_mean", "iou_median"} <= set(got)
    assert got["pixel_auroc"] == 1.0 and got["aupro_fpr30"] == pytest.approx(1.0)
    assert got["ods_tol2"] == 1.0 and got["ois_tol2"] == 1.0


def test_table5_markdown_has_the_threshold_free_and_both_iou_columns(tmp_path):
    rows = []
    for run, model, v in (("cnn_unet-resnet3-c1-s0", "counterfactual", 0.3), ("cnn_unet-resnet3-c1-s1", "counterfactual", 0.2),
                          ("references", "random", 0.05)):
        rows += [{"run": run, "model": model, "metric": m, "value": v, "note": ""} for m in
                 ("iou_median", "iou_mean", "f1_tol2_median", "f1_tol2_mean", "coverage", *tf.METRICS)]
    cls = pd.DataFrame([{"run": r, "model": "D", "metric": m, "value": 0.7, "note": ""}
                        for r in ("cnn_unet-resnet3-c1-s0", "cnn_unet-resnet3-c1-s1") for m in ("accuracy", "f1", "auroc")])
    t = tables.table5_segmentation(pd.DataFrame(rows), cls)
    tables.write_table(t, tmp_path / "table5_segmentation.csv", "Table 5")
    header = (tmp_path / "table5_segmentation.md").read_text().splitlines()[2]
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert {"iou_median", "iou_mean", "pixel_auroc", "aupro_fpr30", "ods_tol2", "ois_tol2"} <= set(cols)
    assert cols.index("iou_mean") == cols.index("iou_median") + 2   # side by side (the median's sd between)
    cf = t[t["saliency"] == "counterfactual"].iloc[0]
    assert cf["pixel_auroc"] == pytest.approx(0.25) and cf["n_seeds"] == 2
    assert tables.THRESHOLD_FREE == tf.METRICS                      # the report's copy of the names


def test_table2_has_an_auroc_column():
    cls = pd.DataFrame([{"run": run, "model": model, "metric": m, "value": v, "note": ""}
                        for run, model, v in (("cnn_unet-resnet3-c1-s0", "D", 0.9), ("baseline-resnet3-s0", "baseline", 0.8),
                                              ("references", "all_damaged", 0.5))
                        for m in ("accuracy", "f1", "precision", "recall", "auroc")])
    t = tables.table2_classification(cls).set_index(["config", "model"])
    assert t.loc[("cnn_unet-resnet3-c1", "D"), "auroc"] == pytest.approx(0.9)
    assert t.loc[("references", "all_damaged"), "auroc"] == pytest.approx(0.5)


def test_the_steps_write_image_auroc_and_threshold_free_rows(small_manifest, tmp_path):
    """Through the steps' own functions on a tiny synthetic set: every classifier's `auroc` (the trivial
    ones' 0.5), and the reference maps' threshold-free rows (uniform noise at the chance level)."""
    from cfgan.evaluate.references import run_classify_references, run_saliency_references
    from cfgan.evaluate.run import run_classify
    from cfgan.config import load_params
    from cfgan.train import gan
    from conftest import ROOT
    params, manifest = small_manifest
    gan.train_gan(params, manifest, "cnn_unet-resnet3-c0-s0", tmp_path / "run")
    cls = run_classify({**params, "seed": 0}, manifest, tmp_path / "run/checkpoint.pt", "synthetic")
    auroc = cls[cls["metric"] == "auroc"].set_index("model")["value"]
    assert set(auroc.index) == {"D", "G"} and auroc.between(0, 1).all()
    refs = run_classify_references({}, manifest, "synthetic")
    assert (refs[refs["metric"] == "auroc"]["value"] == 0.5).all() and len(refs[refs["metric"] == "auroc"]) == 2
    sal = run_saliency_references(load_params([ROOT / "params.yaml"]), manifest, "synthetic", tmp_path / "sal.npz")
    free = sal[sal["metric"].isin(tf.METRICS) & (sal["condition"] == "test")].pivot(index="model", columns="metric", values="value")
    assert set(free.index) == {"local_contrast", "random", "all_pixels"} and set(free.columns) == set(tf.METRICS)
    assert free.loc["random", "pixel_auroc"] == pytest.approx(0.5, abs=0.05)
    assert free.loc["all_pixels", "pixel_auroc"] == 0.5 and free.loc["all_pixels", "aupro_fpr30"] == pytest.approx(0.15)
    assert free.loc["local_contrast", "pixel_auroc"] > free.loc["random", "pixel_auroc"]   # generated cracks are dark lines
