"""What a trained GAN's maps and D have learned, on val only (no retraining): the review items of
issue 23 that a checkpoint can answer.

    python benchmarks/diagnose_maps.py --params params.yaml workflow/profiles/crackforest/params.yaml \
        --manifest data/processed/crackforest/manifest.csv results/val_precision/auto/*/checkpoint.pt

Per checkpoint, one JSON line each:
- `shortcut`: D's mean p_fake (and F1) on the val reals as they are, under lossless augmentation
  (flips, 90-degree turns), under the resampling ones (random crop + resize, small rotations),
  blurred, and under the whole training augmentation; and on G's counterfactuals. A D that learned
  "sharp means fake" calls raw val reals more fake than resampled ones.
- `dropout`: G's maps drawn in eval mode (as evaluated) and with its dropout active (as trained):
  mean change and val IoU. A gap means the G that draws the maps is not the G that was trained.
- `global_shift`: the share of |x - G(x)| that a uniform colour cast per crop explains
  (|per-channel mean of x' - x| / mean |x' - x|), on damaged and undamaged val crops.
- `maps`: val IoU under the evaluation's threshold rule of |x - G(x)| averaged over channels (the
  paper's), its grey-level (luminance) versions: absolute, darker-where-G-brightened and the reverse
  and of Grad-CAM scaled per crop (pytorch-grad-cam) and absolute; beside `local_contrast` with its
  polarity chosen on val; and their product (`evaluate.saliency.fusion`).
- `noise_draws`: how much G's output moves with its noise input, and the val IoU of the best of the
  evaluation's map forms (`evaluate.saliency.counterfactual_forms`, blurred at its `smooth_sigma`) when
  the counterfactual is the mean of K noise draws (K = 1 is what the saliency step draws).
- `local_cast`: the same best form when, instead of each crop's mean difference (`-decast`), a wide
  Gaussian blur of the difference is taken out first (a local cast, at each of a few widths): whether
  G's broad shading changes, not only its uniform one, hide the defect in the map.
- `dihedral`: the same best form when the counterfactual is the mean over K of the crop's 8 flips and
  quarter turns (the saliency step's `evaluate.saliency.turns`: G runs on the turned crop, its output is
  turned back; K = 1 is the crop as it is, 4 the flips and the half turn, 8 all): G's change of the defect
  stays in place under every turn, what it redraws of an oriented texture (rolled steel's stripes) need not.
- `precision`: the same best form when G draws the counterfactuals at the evaluation's precision
  (`compute.precision`; bf16 autocast where `auto` resolves to it) and in fp32: whether bf16 inference
  alone, not bf16 training, costs the maps.

A one-vs-rest checkpoint (`-k<class>` runs of a multi-class data set) is read on its own class's val crops.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from cfgan.compute import resolve
from cfgan.config import load_params
from cfgan.data.augment import augment
from cfgan.data.datasets import load_split, tasks
from cfgan.evaluate import saliency
from cfgan.inference import real_class_probs
from cfgan.maps import counterfactual_form, dihedral_mean, smooth
from cfgan.metrics import binary_metrics, choose_form, choose_threshold
from cfgan.train.gan import load_gan

AUGMENTS = {  # over the training augmentation's own config: only what each name says is kept on
    "lossless": {"scale": [1.0, 1.0], "rotation": 0, "brightness": 0.0, "hue": 0.0, "blur_p": 0.0},
    "resample": {"rot90": False, "hflip": False, "vflip": False, "brightness": 0.0, "hue": 0.0, "blur_p": 0.0},
    "blur": {"scale": [1.0, 1.0], "rotation": 0, "rot90": False, "hflip": False, "vflip": False,
             "brightness": 0.0, "hue": 0.0, "blur_p": 1.0},
    "train": {},
}


def d_probs(d, x, compute, batch: int) -> torch.Tensor:
    with torch.no_grad(), compute.autocast():
        return torch.cat([torch.softmax(d(x[i:i + batch]).float(), 1) for i in range(0, len(x), batch)])


def g_outputs(g, x, compute, batch: int, seed: int, dropout_active: bool = False) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    g.eval()
    if dropout_active:  # dropout as in training, batch norm still on its running statistics
        for m in g.modules():
            if isinstance(m, torch.nn.Dropout2d):
                m.train()
    out = []
    with torch.no_grad(), compute.autocast():
        for i in range(0, len(x), batch):
            z = torch.randn(len(x[i:i + batch]), g.noise_dim, generator=gen).to(x.device)
            out.append(g(x[i:i + batch], z)[0].float())
    g.eval()
    return torch.cat(out)


def val_iou(maps: np.ndarray, masks: np.ndarray, quantiles) -> float:
    return round(choose_threshold(maps, masks, quantiles)[1], 3)


NOISE_DRAWS = (1, 4, 8)
LOCAL_CAST_SIGMAS = (2.0, 4.0, 8.0)
DIHEDRAL_K = (1, 4, 8)


def dihedral_outputs(g, x, compute, batch: int, seed: int, k: int) -> torch.Tensor:
    """G's counterfactual of x averaged over k flips and quarter turns, each undone on G's output (the same noise
    draws for every turn): `maps.dihedral_mean`, the saliency step's `evaluate.saliency.turns`."""
    return dihedral_mean(lambda xt: g_outputs(g, xt, compute, batch, seed), x, k)


def best_form(x, x_cf, damaged, masks, cfg: dict, local_cast: float = 0.0) -> tuple[str, float]:
    """(form, val IoU) of the best of the evaluation's counterfactual forms, blurred as evaluated;
    `local_cast` > 0: a Gaussian blur of that width of the difference is taken out first (the
    `-decast` forms, which take out the mean instead, are then left out)."""
    forms = [f for f in cfg.get("counterfactual_forms", ["abs"]) if not f.endswith("-keep")]
    x, x_cf = x[torch.from_numpy(damaged)].float(), x_cf[torch.from_numpy(damaged)].float()
    if local_cast > 0:
        diff = x_cf - x
        x_cf = x + (diff - smooth(diff.flatten(0, 1), local_cast).view_as(diff))
        forms = [f for f in forms if "-decast" not in f] or ["abs"]
    maps = {f: smooth(counterfactual_form(x, x_cf, f), cfg["smooth_sigma"]).numpy() for f in forms}
    form = choose_form(maps, masks, cfg["quantiles"])  # the saliency step's own choice (and its tie rule)
    return form, val_iou(maps[form], masks, cfg["quantiles"])


def diagnose(ckpt_path: Path, params: dict, manifest: str, compute) -> None:
    g, d, ckpt = load_gan(ckpt_path, compute)
    run, bs, seed = ckpt["summary"]["run"], params["evaluate"]["batch_size"], params["seed"]
    val = load_split(manifest, "val", defect=tasks(manifest, run)[0][0])
    if val.masks is None:
        raise SystemExit(f"{manifest}: the val split has no masks; the map checks need them")
    aug_cfg = {**ckpt["params"]["train"]["augment"]}
    x, y = val.batch(torch.arange(len(val)), compute.device)
    damaged = (y == 1).numpy()
    quantiles = params["evaluate"]["saliency"]["quantiles"]
    masks = val.masks.numpy()[damaged]

    row = {"check": "shortcut", "run": run}
    for name, change in {"raw": None, **AUGMENTS}.items():
        xa = x if change is None else augment(x, {**aug_cfg, **change}, torch.Generator().manual_seed(seed))
        p = d_probs(d, xa, compute, bs)
        row[f"p_fake_{name}"] = round(float(p[:, 2].mean()), 3)
        row[f"f1_{name}"] = round(binary_metrics(y.numpy(), real_class_probs(p).argmax(1).numpy())["f1"], 3)
    x_cf = g_outputs(g, x, compute, bs, seed)
    row["p_fake_counterfactual"] = round(float(d_probs(d, x_cf, compute, bs)[:, 2].mean()), 3)
    print(json.dumps(row), flush=True)

    x_cf_drop = g_outputs(g, x, compute, bs, seed, dropout_active=True)
    row = {"check": "dropout", "run": run}
    for name, xc in (("eval", x_cf), ("dropout_active", x_cf_drop)):
        diff = (x - xc).abs().mean(1).numpy()
        row[f"change_{name}"] = round(float(diff.mean()), 4)
        row[f"iou_{name}"] = val_iou(diff[damaged], masks, quantiles)
    print(json.dumps(row), flush=True)

    signed = x_cf - x
    cast = signed.mean((2, 3)).abs().mean(1) / signed.abs().mean((1, 2, 3)).clamp_min(1e-8)
    print(json.dumps({"check": "global_shift", "run": run,
                      "cast_share_damaged": round(float(cast[y == 1].mean()), 3),
                      "cast_share_undamaged": round(float(cast[y == 0].mean()), 3)}), flush=True)

    def form_iou(form):  # the evaluation's own map forms (cfgan.maps.counterfactual_form)
        return val_iou(counterfactual_form(x, x_cf, form).numpy()[damaged], masks, quantiles)
    row = {"check": "maps", "run": run,
           **{f"counterfactual_{name}": form_iou(form) for name, form in (
               ("abs_mean", "abs"), ("grey_abs", "both"), ("grey_x_darker", "dark"), ("grey_x_brighter", "bright"),
               ("decast_abs_mean", "abs-decast"), ("decast_grey_x_darker", "dark-decast"))}}
    sub = val.subset(torch.nonzero(torch.from_numpy(damaged)).flatten())
    with compute.autocast():
        for scaling in saliency.GRADCAM_SCALINGS:
            row[f"gradcam_{scaling}"] = val_iou(saliency.gradcam_maps(d, sub, bs, compute.device, scaling), masks, quantiles)
    lc = params["evaluate"]["saliency"]["local_contrast"]
    for polarity in saliency.POLARITIES:
        row[f"local_contrast_{polarity}"] = val_iou(
            saliency.local_contrast_maps(sub.images, lc["sigma_narrow"], lc["sigma_wide"], polarity), masks, quantiles)
    # evaluate.saliency.fusion: the counterfactual map (dark-decast) x local_contrast (dark), a row of its own
    dark_lc = saliency.local_contrast_maps(sub.images, lc["sigma_narrow"], lc["sigma_wide"], "dark")
    cf = counterfactual_form(x, x_cf, "dark-decast").numpy()[damaged]  # as the fused row uses it
    row["fusion_dark-decast_x_local_contrast_dark"] = val_iou(np.clip(cf, 0, None) * np.clip(dark_lc, 0, None), masks, quantiles)
    print(json.dumps(row), flush=True)

    cfg = params["evaluate"]["saliency"]
    draws = [x_cf] + [g_outputs(g, x, compute, bs, seed + k) for k in range(1, max(NOISE_DRAWS))]
    row = {"check": "noise_draws", "run": run, "change_between_draws": round(float((draws[0] - draws[1]).abs().mean()), 4)}
    for k in NOISE_DRAWS:
        row[f"form_k{k}"], row[f"iou_k{k}"] = best_form(x, torch.stack(draws[:k]).mean(0), damaged, masks, cfg)
    print(json.dumps(row), flush=True)

    row = {"check": "local_cast", "run": run}
    for sigma in (0.0, *LOCAL_CAST_SIGMAS):
        row[f"form_sigma{sigma:g}"], row[f"iou_sigma{sigma:g}"] = best_form(x, x_cf, damaged, masks, cfg, sigma)
    print(json.dumps(row), flush=True)

    row = {"check": "dihedral", "run": run}
    for k in DIHEDRAL_K:
        xc = x_cf if k == 1 else dihedral_outputs(g, x, compute, bs, seed, k)
        row[f"form_k{k}"], row[f"iou_k{k}"] = best_form(x, xc, damaged, masks, cfg)
    print(json.dumps(row), flush=True)

    row = {"check": "precision", "run": run, "trained_at": ckpt.get("compute", {}).get("precision", "fp32"),
           "evaluated_at": compute.precision}
    x_cf_fp32 = g_outputs(g, x, dataclasses.replace(compute, precision="fp32"), bs, seed)  # the same noise draws
    for name, xc in (("evaluated", x_cf), ("fp32", x_cf_fp32)):
        row[f"form_{name}"], row[f"iou_{name}"] = best_form(x, xc, damaged, masks, cfg)
    row["change_between"] = round(float((x_cf - x_cf_fp32).abs().mean()), 5)
    print(json.dumps(row), flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", nargs="+", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("checkpoints", nargs="+", type=Path)
    args = ap.parse_args(argv)
    params = load_params(args.params)
    compute = resolve(params)
    for path in args.checkpoints:
        diagnose(path, params, args.manifest, compute)


if __name__ == "__main__":
    main()
