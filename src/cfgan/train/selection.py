"""Which validated step a run keeps, and the signs that a run collapsed.

The paper's: the checkpoint is chosen on val (`validate`'s `val_score`, from labels alone).
Beyond the paper: the collapse flags (a collapsed step never beats a healthy one, and every
table row names its flags) and `StepKeeper`'s tolerance (`train.val_maps.tolerance`).
"""

from __future__ import annotations

import math

import numpy as np

from ..compute import Compute
from ..inference import predict, real_class_probs
from ..metrics import balanced_accuracy, binary_metrics

# A run is reported as collapsed when, at its selected step on val, ...
IDENTITY_CHANGE = 1 / 255     # ... G changes images by less than one grey level on average,
ONE_CLASS = 0.02              # ... G's head or D calls fewer than 2 % (or more than 98 %) of crops damaged,
SEPARATION = 0.5              # ... or D's fake score ranks real val crops above its own counterfactuals
                              # (AUC of p_fake, generated against real, below 0.5),
HEAD_MARGIN = 0.5             # ... or G's head keeps less than half of D's margin over chance (balanced
                              # accuracy - 0.5): a head broken while D still classifies (CrackForest val:
                              # single checkpoints at 0.55-0.68 between 0.9s, D at ~0.9, no other flag).



def fake_score_auc(p_fake_generated: np.ndarray, p_fake_real: np.ndarray) -> float:
    """AUC of D's fake probability, counterfactuals (positive) against real crops: the chance that a
    random counterfactual looks more fake to D than a random real crop (ties count half)."""
    from scipy.stats import rankdata
    ranks = rankdata(np.concatenate([p_fake_generated, p_fake_real]))
    n_pos, n_neg = len(p_fake_generated), len(p_fake_real)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def validate(g, d, split, batch_size: int, compute: Compute, seed: int) -> dict:
    """Val metrics of the whole model, in eval mode: D's F1, G's head balanced accuracy, the
    fraction of counterfactuals D assigns to the opposite real class over both the crop's own class
    and 'fake' (flip: a counterfactual D is sure is fake has not flipped), how well D's fake score
    separates counterfactuals from real crops (AUC), and the signs of collapse. `score`, the mean of
    the first three, selects the checkpoint."""
    g.eval(); d.eval()
    with compute.autocast():
        out = predict(split, d=d, g=g, batch_size=batch_size, device=compute.device, seed=seed)
    g.train(); d.train()
    y = split.labels.numpy()
    d_pred = real_class_probs(out["d_logits"]).argmax(1).numpy()
    g_pred = out["g_probs"].argmax(1).numpy()
    flip = float(np.mean(out["d_logits_cf"].argmax(1).numpy() == 1 - y))  # argmax over all three: fake is not a flip
    row = {"val_f1_d": binary_metrics(y, d_pred)["f1"], "val_bacc_g": balanced_accuracy(y, g_pred),
           "val_flip": flip, "val_change": float(out["change"].mean()), "val_p_fake_real": float(out["d_probs"][:, 2].mean()),
           "val_auc_fake": fake_score_auc(out["d_probs_cf"][:, 2].double().numpy(), out["d_probs"][:, 2].double().numpy()),
           "val_damaged_rate_d": float(d_pred.mean()), "val_damaged_rate_g": float(g_pred.mean())}
    row["val_score"] = (row["val_f1_d"] + row["val_bacc_g"] + row["val_flip"]) / 3
    row["val_bacc_d"] = balanced_accuracy(y, d_pred)  # for the broken-head flag; not in the score
    return row


def collapse_signs(row: dict) -> list[str]:
    """What went wrong at a selected step, read from its val row (empty: nothing)."""
    signs = []
    if row["val_change"] < IDENTITY_CHANGE:
        signs.append(f"G is nearly the identity (mean |x - G(x)| {row['val_change'] * 255:.2f} grey levels)")
    for who in ("g", "d"):
        rate = row[f"val_damaged_rate_{who}"]
        if rate < ONE_CLASS or rate > 1 - ONE_CLASS:
            signs.append(f"{'G head' if who == 'g' else 'D'} predicts one class ({rate:.1%} of val crops damaged)")
    # Not "p_fake on real crops > 0.5": that is where the game starts (G the identity), not a failure.
    if row["val_auc_fake"] < SEPARATION:
        signs.append(f"D finds real crops more fake than its own counterfactuals (AUC of p_fake {row['val_auc_fake']:.2f}; "
                     f"mean p_fake {row['val_p_fake_real']:.2f} on real val crops)")
    bacc_d = row.get("val_bacc_d")  # absent (or NaN) in a log of older code: no verdict then
    if bacc_d is not None and not math.isnan(bacc_d) and row["val_bacc_g"] - 0.5 < HEAD_MARGIN * (bacc_d - 0.5):
        signs.append(f"G head near chance while D classifies (balanced accuracy {row['val_bacc_g']:.2f} against D's {bacc_d:.2f})")
    return signs


def selection_key(row: dict, column: str = "val_score") -> tuple[bool, float]:
    """How selection ranks a validation row: a step without signs of collapse beats any collapsed
    one; among equals, the higher `column` (val_score, or val_map_iou under train.val_maps.select)."""
    return not collapse_signs(row), row[column]


class StepKeeper:
    """Which validated step a run keeps, decided as the run goes (a run cannot go back to a step it
    did not keep). Rows are ranked by `selection_key` on `column`.

    tolerance 0: the best row, the earliest of equals. tolerance t > 0 (`train.val_maps.tolerance`,
    not in the paper): every row of the best row's collapse tier within t of the best `column` stays a
    candidate, and the run keeps the candidate with the best label-only val_score (the earliest of
    equals). On CrackForest the maps' val IoU moves by ~0.01 between neighbouring checkpoints, about
    its standard error over ~180 damaged val crops, so among maps the curve cannot tell apart the
    better classifier wins. Candidates are pruned as the best rises: a rising curve holds one, a plateau
    within t holds all of its steps."""

    def __init__(self, column: str = "val_score", tolerance: float = 0.0, candidates: list[dict] | None = None):
        self.column, self.tolerance = column, tolerance
        # the best key so far is always a candidate's (the best row is near itself), so the candidates are the state
        self.candidates = [{**c, "key": tuple(c["key"])} for c in candidates or []]  # (a resume file's, when given)

    def offer(self, step: int, row: dict, payload) -> None:
        """Consider a validated step; `payload()` (the weights to keep) is called only if it stays."""
        key = selection_key(row, self.column)
        top = max([key] + [c["key"] for c in self.candidates])
        near = lambda k: k[0] == top[0] and k[1] >= top[1] - self.tolerance  # noqa: E731
        self.candidates = [c for c in self.candidates if near(c["key"])]
        if near(key) and (self.tolerance > 0 or not self.candidates):
            self.candidates.append({"key": key, "score": row["val_score"], "step": step, "row": dict(row), **payload()})

    def kept(self) -> dict:
        """The kept candidate: its key, val_score, step, row and payload."""
        if self.tolerance == 0:
            return self.candidates[0]
        return max(self.candidates, key=lambda c: (c["score"], -c["step"]))
