"""Evaluation steps: each loads a checkpoint and the test split, and returns tidy rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data.datasets import load_split
from ..errors import UserError
from ..train.baselines import load_baseline
from ..train.common import device, load_checkpoint
from ..train.gan import load_gan
from ..train.segmenters import load_segmenter, predict_masks
from . import fid, robustness, saliency, uncertainty
from .metrics import binary_metrics
from .predict import predict, real_class_probs
from .tidy import rows_to_frame

N_EXAMPLES = 4


def _frame(rows, dataset, run, model=None, note=""):
    for r in rows:
        r.setdefault("dataset", dataset)
        r.setdefault("run", run)
        r.setdefault("model", model)
        r.setdefault("note", note)
    return rows_to_frame(rows)


def _examples(split, k=N_EXAMPLES) -> torch.Tensor:
    """First k test crops of each class, undamaged first (a fixed, reproducible choice)."""
    labels = split.labels
    idx = torch.cat([torch.nonzero(labels == c).flatten()[:k] for c in (0, 1)])
    return idx


def run_fid_real(params, manifest: Path, out: Path) -> str:
    """Inception features of the real test crops, once per data set: every run's FID step reuses
    them instead of pushing the same real images through Inception again."""
    dev, bs = device(), params["evaluate"]["batch_size"]
    test = load_split(manifest, "test")
    cfg = params["evaluate"]["fid"]
    net, note = fid.inception(cfg["dims"], cfg["inception_weights"], cfg["allow_untrained_inception"], dev)
    feats = fid.activations(net, test.images.float() / 255, bs, dev)
    fid.save_features(out, feats, test.labels.numpy(), note, cfg["dims"], manifest)
    return f"{len(feats)} real test crops, {cfg['dims']} features; {note}"


def run_fid(params, manifest: Path, checkpoint: Path, real_features: Path, dataset: str, examples_out: Path) -> pd.DataFrame:
    dev, bs = device(), params["evaluate"]["batch_size"]
    g, d, ckpt = load_gan(checkpoint, dev)
    test = load_split(manifest, "test")
    cfg = params["evaluate"]["fid"]
    real, labels, real_note = fid.load_features(real_features, cfg["dims"], test.labels.numpy())
    out = predict(test, g=g, batch_size=bs, device=dev, seed=params["seed"], keep_counterfactuals=True)
    x_cf = out["x_cf"]
    net, note = fid.inception(cfg["dims"], cfg["inception_weights"], cfg["allow_untrained_inception"], dev)
    if note != real_note:
        raise UserError(f"{real_features} was computed with '{real_note}', this step has '{note}': rerun the fid-real step")
    fake = fid.activations(net, x_cf, bs, dev)
    rows = []
    for subset, (value, n_real, n_fake) in fid.fid_subsets(real, fake, labels).items():
        rows.append({"metric": "fid", "condition": subset, "value": value,
                     "note": f"{note}; {cfg['dims']} features; {n_real} real vs {n_fake} counterfactuals"})
    idx = _examples(test)
    np.savez_compressed(examples_out, x=(test.images[idx].numpy()), x_cf=(x_cf[idx].numpy() * 255).round().astype(np.uint8),
                        labels=test.labels[idx].numpy())
    return _frame(rows, dataset, ckpt["summary"]["run"], "G")


def _load_any(checkpoint: Path, dev):
    ckpt = load_checkpoint(checkpoint)
    if ckpt["kind"] == "gan":
        return load_gan(ckpt, dev)
    model, ckpt = load_baseline(ckpt, dev)
    return None, model, ckpt


def run_classify(params, manifest: Path, checkpoint: Path, dataset: str) -> pd.DataFrame:
    dev, bs = device(), params["evaluate"]["batch_size"]
    g, d, ckpt = _load_any(checkpoint, dev)
    test = load_split(manifest, "test")
    out = predict(test, d=d, g=g, batch_size=bs, device=dev, seed=params["seed"])
    y = test.labels.numpy()
    models = {"baseline": out["d_probs"]} if g is None else {"D": real_class_probs(out["d_probs"]), "G": out["g_probs"]}
    rows = [{"model": m, "metric": k, "condition": "test", "value": v}
            for m, probs in models.items() for k, v in binary_metrics(y, probs.argmax(1).numpy()).items()]
    return _frame(rows, dataset, ckpt["summary"]["run"])


def run_robustness(params, manifest: Path, checkpoint: Path, dataset: str) -> pd.DataFrame:
    dev, bs = device(), params["evaluate"]["batch_size"]
    g, d, ckpt = _load_any(checkpoint, dev)
    test = load_split(manifest, "test")
    if g is None:
        rows, model = robustness.sweep(test, d, None, params["evaluate"], bs, params["seed"], dev), "baseline"
    else:
        rows, model = robustness.sweep(test, robustness.RealLogits(d), d, params["evaluate"], bs, params["seed"], dev), "D"
    return _frame(rows, dataset, ckpt["summary"]["run"], model)


def run_uncertainty(params, manifest: Path, checkpoint: Path, dataset: str) -> pd.DataFrame:
    dev, bs = device(), params["evaluate"]["batch_size"]
    g, d, ckpt = load_gan(checkpoint, dev)
    test = load_split(manifest, "test")
    out = predict(test, d=d, g=g, batch_size=bs, device=dev, seed=params["seed"])
    rows = uncertainty.fakeness_correlation(out["d_probs"], out["g_probs"], test.labels)
    return _frame(rows, dataset, ckpt["summary"]["run"], note=f"{len(test)} test crops")


def run_saliency(params, manifest: Path, checkpoint: Path, dataset: str, examples_out: Path) -> pd.DataFrame:
    """IoU per damaged test crop for a GAN run (counterfactual maps and Grad-CAM on its D) or a
    supervised segmenter; thresholds chosen on val."""
    dev, bs, seed = device(), params["evaluate"]["batch_size"], params["seed"]
    candidates, sigma = params["evaluate"]["saliency"]["thresholds"], params["evaluate"]["saliency"]["smooth_sigma"]
    val, test = load_split(manifest, "val"), load_split(manifest, "test")
    if test.masks is None:
        raise UserError(f"{manifest}: crops have no masks, so saliency IoU does not apply to this data set")
    ckpt = load_checkpoint(checkpoint)
    if ckpt["kind"] == "segmenter":
        model, ckpt = load_segmenter(ckpt, dev)
        methods = [("segmenter", False, lambda s: predict_masks(model, s, bs, dev).numpy())]
    else:
        g, d, ckpt = load_gan(ckpt, dev)
        methods = [("counterfactual", True, lambda s: saliency.counterfactual_maps(g, s, bs, seed, dev, sigma)),
                   ("gradcam", True, lambda s: saliency.gradcam_maps(d, s, bs, dev))]
    rows, example_maps = [], {}
    vmask, tmask = (val.labels == 1).numpy(), (test.labels == 1).numpy()
    for method, relative, make in methods:
        t = saliency.choose_threshold(make(val)[vmask], val.masks.numpy()[vmask], candidates, relative)
        test_maps = make(test)
        ious = saliency.per_image_iou(test_maps[tmask], test.masks.numpy()[tmask], t, relative)
        example_maps[method] = test_maps
        note = f"{method}: threshold {t}{' x max' if relative else ''}, chosen on {int(vmask.sum())} val crops"
        if method == "counterfactual" and sigma > 0:
            note += f"; maps blurred with a {sigma} px Gaussian"
        rows += [{"model": method, "metric": "iou", "condition": path, "value": v, "note": note}
                 for path, v in zip(np.array(test.paths)[tmask], ious)]
        rows += [{"model": method, "metric": f"iou_{stat}", "condition": "test", "value": float(fn(ious)), "note": note}
                 for stat, fn in (("mean", np.mean), ("median", np.median))]
        rows.append({"model": method, "metric": "threshold", "condition": "val", "value": t, "note": note})
        if method == "segmenter":  # a crop is called damaged when its predicted mask is not empty
            predicted = saliency.binarize(test_maps, t, relative).reshape(len(test), -1).any(1)
            rows += [{"model": method, "metric": k, "condition": "test", "value": v, "note": note}
                     for k, v in binary_metrics(test.labels.numpy(), predicted).items()]
    idx = torch.nonzero(test.labels == 1).flatten()[:N_EXAMPLES].numpy()
    np.savez_compressed(examples_out, x=test.images[idx].numpy(), mask=test.masks[idx].numpy(),
                        **{name: maps[idx] for name, maps in example_maps.items()})
    return _frame(rows, dataset, ckpt["summary"]["run"])
