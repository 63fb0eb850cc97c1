"""Classification metrics (binary: class 1 = damaged is the positive class; multi-class: macro
F1 over undamaged and every defect class) and IoU."""

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
