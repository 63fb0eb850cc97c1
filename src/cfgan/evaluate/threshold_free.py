"""Threshold-free scores of saliency maps (Table 5) and of classifiers (Table 2), beside the
val-chosen threshold's IoU and f1_tol2 (evaluate/saliency.py).

Maps, over the crops the saliency step scores (the damaged test crops: on an undamaged crop a
counterfactual G draws a defect in, so its map there is no false alarm of a localisation):
- `pixel_auroc`: ROC AUC of every pixel's map value against its mask, all crops' pixels pooled
  (the ROC at every distinct value by trapezoids, ties counting one half: scikit-learn's
  `roc_auc_score`, which the tests check it against, computed from the one sort of the pooled
  pixels that AUPRO and ODS share, as scikit-learn's own would be a second and slower one).
- `aupro_fpr30`: the area under the per-region-overlap (PRO) curve up to a false positive rate of
  0.3, divided by 0.3 (Bergmann et al., MVTec AD, IJCV 2021; anomalib's AUPRO). At a threshold t,
  PRO is the mean over every connected region of every mask (8-connected, as MVTec's code labels
  them) of the fraction of the region at or above t, and FPR the fraction of the mask-free pixels
  at or above t. Neither torchmetrics nor anomalib is a dependency here, so this is MVTec AD's own
  algorithm (`compute_pro` and `trapezoid` of its evaluation code) in numpy: exact at every
  distinct map value, no threshold grid, linearly interpolated at FPR 0.3; scipy.ndimage.label
  with a 3 x 3 structure labels the regions as skimage.measure.label(connectivity=2) would. A
  random map scores about 0.15, a constant one exactly 0.15.
- `ods_tol2`, `ois_tol2`: the crack-detection benchmarks' F-measures with a 2 px tolerance, the
  same matching as `saliency.tolerant_f1` (a predicted pixel is correct when a true pixel lies
  within 2 px, a true pixel found when a predicted one does; its disk, `saliency.tolerance_disk`,
  is the set a distance transform would give: distance <= 2). ODS: the best F over one threshold
  for the whole set, precision and recall from the set's pooled counts; OIS: the mean over crops of
  each crop's best F. Both are exact over every distinct map value (a crop's recall at t reads the
  highest map value within 2 px of each true pixel, one maximum filter per crop, so no threshold
  grid and no distance transform per threshold). ODS picks its threshold on the very crops it
  scores, by definition, and OIS one per crop: both are optimistic bounds, which is why Table 5
  reports them beside the IoU at a threshold chosen on val, not instead of it.
  They are reported for every masked data set, thin structures (cracks) or blobs (bruises, steel
  patches) alike: one rule with no params key to get wrong, and on a blob 2 px of tolerance changes
  little, so the reader of a blob data set can read them as plain F-measures or ignore them.

Classifiers: `image_auroc`, scikit-learn's ROC AUC of a per-crop damaged score against the labels
(Table 2's `auroc`); a constant score (the trivial classifiers) scores 0.5, the chance level.

Every score is NaN where it is undefined: one class only (AUROC), no mask region or no mask-free
pixel (AUPRO).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .saliency import TOLERANCE_PX, tolerance_disk

AUPRO_FPR_LIMIT = 0.3
REGIONS = np.ones((3, 3), int)  # 8-connected mask regions, as MVTec AD's evaluation code labels them


def image_auroc(labels, scores) -> float:
    """ROC AUC of per-crop scores (higher: more likely damaged) against 0/1 labels (scikit-learn)."""
    from sklearn.metrics import roc_auc_score  # imported on use: only the steps that score need scikit-learn
    y = np.asarray(labels, bool).ravel()
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, np.asarray(scores, np.float64).ravel()))


def _descending(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pooled pixels' order by descending map value, and where each run of equal values ends in
    it: the cumulative sum of any per-pixel count along `order`, read at `last`, is that count over
    the pixels at or above each distinct value. One sort serves every pooled score."""
    scores = np.asarray(maps).ravel()
    order = np.argsort(scores)[::-1]   # ties need no order: every count is read at the end of its run
    s = scores[order]
    return order, np.append(s[1:] != s[:-1], True)


def _at_thresholds(weights: np.ndarray, ordered) -> np.ndarray:
    order, last = ordered
    return np.cumsum(np.asarray(weights).ravel()[order], dtype=np.float64)[last]


def pixel_auroc(maps: np.ndarray, masks: np.ndarray, ordered=None) -> float:
    """ROC AUC of N x H x W maps' pixels against the masks' pixels, pooled over the crops: the ROC at
    every distinct value, integrated by trapezoids, as scikit-learn's roc_auc_score (ties count one
    half; the tests check the two agree), from the sort AUPRO and ODS share (`map_scores`)."""
    masks = np.asarray(masks, bool)
    if masks.all() or not masks.any():
        return float("nan")
    ordered = ordered or _descending(maps)
    tpr = np.concatenate([[0.0], _at_thresholds(masks, ordered) / masks.sum()])
    fpr = np.concatenate([[0.0], _at_thresholds(~masks, ordered) / (~masks).sum()])
    return float(np.sum(0.5 * (tpr[1:] + tpr[:-1]) * np.diff(fpr)))


def pro_curve(maps: np.ndarray, masks: np.ndarray, ordered=None) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) at every distinct map value, from (0, 0) to (1, 1): MVTec AD's `compute_pro`."""
    masks = np.asarray(masks, bool)
    pro_change = np.zeros(masks.shape, np.float64)
    n_regions = 0
    for i, mask in enumerate(masks):
        labeled, n = ndimage.label(mask, REGIONS)
        n_regions += n
        if n:
            sizes = np.bincount(labeled.ravel())
            pro_change[i][labeled > 0] = 1.0 / sizes[labeled[labeled > 0]]
    n_ok = (~masks).sum()
    if n_regions == 0 or n_ok == 0:
        return np.array([np.nan]), np.array([np.nan])
    ordered = ordered or _descending(maps)
    fpr = np.clip(_at_thresholds(~masks, ordered) / n_ok, None, 1.0)
    pro = np.clip(_at_thresholds(pro_change, ordered) / n_regions, None, 1.0)
    return np.concatenate([[0.0], fpr, [1.0]]), np.concatenate([[0.0], pro, [1.0]])


def _area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoidal area under y(x) (x non-decreasing) from x[0] to x_max, y interpolated at x_max:
    MVTec AD's `trapezoid`."""
    correction = 0.0
    i = int(np.searchsorted(x, x_max, side="right"))   # x[i - 1] <= x_max < x[i]
    if x[i - 1] != x_max:
        y_max = y[i - 1] + (y[i] - y[i - 1]) * (x_max - x[i - 1]) / (x[i] - x[i - 1])
        correction = 0.5 * (y_max + y[i - 1]) * (x_max - x[i - 1])
    x, y = x[:i], y[:i]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)) + correction)


def aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = AUPRO_FPR_LIMIT, ordered=None) -> float:
    """Area under the PRO curve up to `fpr_limit`, normalised by it (1: perfect; see the module docstring)."""
    fpr, pro = pro_curve(maps, masks, ordered)
    if np.isnan(fpr[0]):
        return float("nan")
    return _area_up_to(fpr, pro, fpr_limit) / fpr_limit


def _tolerance_counts(scores: np.ndarray, mask: np.ndarray, tol: int) -> tuple[np.ndarray, np.ndarray]:
    """One crop: whether each pixel lies within `tol` px of a true pixel (a predicted pixel there is
    correct), and for each true pixel the highest map value within `tol` px (it is found at every
    threshold up to that value)."""
    disk = tolerance_disk(tol)
    near = ndimage.binary_dilation(mask, disk)
    reach = ndimage.maximum_filter(scores, footprint=disk, mode="constant", cval=-np.inf)
    return near, reach[mask]


def _best_f(scores: np.ndarray, near: np.ndarray, reach: np.ndarray, ordered=None) -> float:
    """The best tolerant F over every threshold t (predicted: score >= t) and over predicting nothing,
    from pixel scores, their `near` flags and the true pixels' `reach` (`_tolerance_counts`).
    As `tolerant_f1`: with no true pixel, predicting nothing scores 1 and anything else 0."""
    nothing = 1.0 if len(reach) == 0 else 0.0
    if scores.size == 0 or len(reach) == 0:
        return nothing
    ordered = ordered or _descending(scores)
    order, last = ordered
    t = np.asarray(scores).ravel()[order][last]
    n_pred = np.flatnonzero(last) + 1.0
    correct = _at_thresholds(near, ordered)
    found = len(reach) - np.searchsorted(np.sort(reach), t, side="left")
    precision, recall = correct / n_pred, found / len(reach)
    total = precision + recall
    f = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    return float(max(f.max(), nothing))


def ods_ois(maps: np.ndarray, masks: np.ndarray, tol: int = TOLERANCE_PX, ordered=None) -> tuple[float, float]:
    """(ODS, OIS) of N x H x W maps against their masks with a `tol` px tolerance (module docstring)."""
    masks, maps = np.asarray(masks, bool), np.asarray(maps)
    per_crop = [_tolerance_counts(m, k, tol) for m, k in zip(maps, masks)]
    ois = float(np.mean([_best_f(m, near, reach) for m, (near, reach) in zip(maps, per_crop)]))
    near = np.stack([n for n, _ in per_crop]) if per_crop else np.zeros(maps.shape, bool)
    ods = _best_f(maps, near, np.concatenate([r for _, r in per_crop] or [np.zeros(0)]), ordered)
    return ods, ois


METRICS = ("pixel_auroc", "aupro_fpr30", "ods_tol2", "ois_tol2")  # the tidy CSV's names, in Table 5's order


def map_scores(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Every threshold-free score of one method's maps on its crops, by its tidy-CSV name; one sort
    of the pooled pixels serves the three pooled scores (1e7 pixels: about 5 s on one core)."""
    maps, masks = np.asarray(maps), np.asarray(masks, bool)
    ordered = _descending(maps)
    ods, ois = ods_ois(maps, masks, ordered=ordered)
    return dict(zip(METRICS, (pixel_auroc(maps, masks, ordered), aupro(maps, masks, ordered=ordered), ods, ois)))
