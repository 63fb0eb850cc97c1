"""Classification metrics (binary: class 1 = damaged is the positive class; multi-class: macro
F1 over undamaged and every defect class), IoU, and the one rule that turns a saliency map into a
mask (a threshold chosen on val). Below both training (validation, segmenter selection) and
evaluation, so neither layer imports the other."""

from __future__ import annotations

import numpy as np

NEARLY_ALL_PIXELS = 0.9    # a saliency mask covering more than this fraction of a crop's pixels is flagged


def binary_metrics(y_true, y_pred) -> dict[str, float]:
    y_true, y_pred = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    tp = float(np.sum(y_true & y_pred))
    fp = float(np.sum(~y_true & y_pred))
    fn = float(np.sum(y_true & ~y_pred))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": float(np.mean(y_true == y_pred)), "f1": f1, "precision": precision, "recall": recall}


def balanced_accuracy(y_true, y_pred) -> float:
    """Mean of the recalls of damaged (1) and undamaged (0) crops; a class absent from y_true counts 0."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    recall = [float(np.mean(y_pred[y_true == c] == c)) if (y_true == c).any() else 0.0 for c in (1, 0)]
    return sum(recall) / 2


def multiclass_metrics(y_true, y_pred, n_classes: int) -> dict[str, float]:
    """Accuracy, macro F1 over all n_classes (each class one-vs-rest, a class with no true and no
    predicted crop left out of the mean), and `f1_<id>` per class."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    out = {"accuracy": float(np.mean(y_true == y_pred))}
    f1s = []
    for c in range(n_classes):
        if not ((y_true == c).any() or (y_pred == c).any()):
            continue
        out[f"f1_{c}"] = binary_metrics(y_true == c, y_pred == c)["f1"]
        f1s.append(out[f"f1_{c}"])
    out["macro_f1"] = float(np.mean(f1s)) if f1s else 0.0
    return out


def iou(pred: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union of two boolean masks; 1.0 when both are empty."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    union = np.logical_or(pred, target).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, target).sum() / union)


# --- saliency thresholds (evaluate/saliency.py's docstring gives the rule) ----------------------

def binarize(maps: np.ndarray, t: float) -> np.ndarray:
    return maps >= t


def per_image_iou(maps: np.ndarray, masks: np.ndarray, t: float) -> np.ndarray:
    pred = binarize(maps, t)
    return np.array([iou(p, m) for p, m in zip(pred, masks)])


def choose_threshold(maps: np.ndarray, masks: np.ndarray, quantiles: list[float]) -> tuple[float, float]:
    """(threshold, its mean val IoU): the q-quantile of all val pixel values that scores best."""
    best_t, best = float("nan"), -1.0
    for q in sorted(quantiles, reverse=True):  # on a tie the higher quantile (fewer pixels) stays
        t = float(np.quantile(maps, q))
        score = float(per_image_iou(maps, masks, t).mean())
        if score > best:
            best_t, best = t, score
    return best_t, best


def choose_form(candidates: dict[str, np.ndarray], val_masks, quantiles) -> str:
    """The name of the candidate val maps (a method's forms: a polarity, a scaling) whose best
    threshold scores the highest mean val IoU; on a tie the first listed."""
    scores = {name: choose_threshold(maps, val_masks, quantiles)[1] for name, maps in candidates.items()}
    return max(scores, key=lambda name: (scores[name], -list(candidates).index(name)))
