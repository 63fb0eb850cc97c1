"""Curves along training on val, beyond the paper (off in its configuration).

`train.val_maps`: the counterfactual maps' val IoU at every validation (and, with `select`, the
curve that picks the checkpoint); `train.val_pgd`: D's val F1 under PGD, a curve only.
"""

from __future__ import annotations

from pathlib import Path

from .. import attacks
from ..compute import Compute
from ..errors import UserError
from ..maps import best_form_iou


def map_curve(g, split, maps_cfg: dict, batch_size: int, compute: Compute, seed: int) -> dict:
    """`train.val_maps`: the counterfactual maps' mean IoU on the damaged val crops (the best of its
    forms, the threshold chosen on those crops, as the saliency step chooses on val), G in eval mode
    as the saliency step draws them (its mode is restored afterwards)."""
    was_training = g.training
    g.eval()
    with compute.autocast():
        form, score = best_form_iou(g, split, maps_cfg["forms"], maps_cfg["quantiles"], batch_size, seed,
                                    compute.device, maps_cfg["smooth_sigma"])
    g.train(was_training)
    return {"val_map_iou": score, "val_map_form": form}


def pgd_curve(d, attacked, pgd_cfg: dict, step_sizes: list[float], batch_size: int, compute: Compute, seed: int) -> dict:
    """`train.val_pgd`: D's val F1 under targeted PGD at each step size, attacked as the robustness
    step attacks test (evaluate.pgd's steps and eps, fp32, D in eval mode; its mode is restored),
    logged as val_f1_d_pgd=<step size>. A curve only: selection never reads it. The attack takes
    input gradients alone (torchattacks' autograd.grad) and draws no random numbers, so training
    goes on with the same bits."""
    was_training = d.training
    f1 = attacks.f1_under_pgd(attacked, attacks.RealLogits(d), pgd_cfg, step_sizes, batch_size, seed, compute.device)
    d.train(was_training)
    return {f"val_f1_d_{condition}": value for condition, value in f1.items()}


def val_maps_settings(cfg: dict, saliency: dict | None) -> dict | None:
    """`train.val_maps` (None: off) with what it leaves out taken from the saliency step's
    `evaluate.saliency` (its forms, quantiles and blur), so that a checkpoint selected on the curve
    is scored as its maps will be; keys set under train.val_maps win."""
    maps_cfg = cfg.get("val_maps")
    if maps_cfg is None:
        return None
    saliency = saliency or {}
    if "quantiles" not in maps_cfg and "quantiles" not in saliency:
        raise UserError("train.val_maps: no threshold quantiles (set train.val_maps.quantiles or evaluate.saliency.quantiles)")
    if maps_cfg.get("tolerance", 0) > 0 and not maps_cfg.get("select", False):
        raise UserError("train.val_maps.tolerance widens selection on the maps' val IoU: it needs train.val_maps.select: true")
    return {"forms": saliency.get("counterfactual_forms", ["abs"]), "quantiles": saliency.get("quantiles"),
            "smooth_sigma": saliency.get("smooth_sigma", 0.0), "select": False, **maps_cfg}


def check_val_maps(cfg: dict, val, manifest: Path, saliency: dict | None = None) -> dict | None:
    """`val_maps_settings`, refused with a clear error where val has nothing to score the maps on."""
    settings = val_maps_settings(cfg, saliency)
    if settings is not None and (val.masks is None or not bool((val.labels == 1).any())):
        raise UserError(f"train.val_maps scores the maps against val masks, but the val split of {manifest} has "
                        f"{'no masks' if val.masks is None else 'no damaged crop'}: remove train.val_maps for this data set")
    return settings
