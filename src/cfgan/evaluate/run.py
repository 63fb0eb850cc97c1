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
REFERENCES = "references"  # the training-free "run": trivial classifiers, reference saliency maps


def _run_note(ckpt: dict) -> str:
    """A warning carried into every table when training collapsed (see train/gan.py)."""
    signs = ckpt.get("summary", {}).get("collapse") or []
    return f"; COLLAPSED run {ckpt['summary']['run']}: " + "; ".join(signs) if signs else ""


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
    return _frame(rows, dataset, ckpt["summary"]["run"], note=_run_note(ckpt).lstrip("; "))


def run_classify_references(params, manifest: Path, dataset: str) -> pd.DataFrame:
    """The trivial classifiers on the test split: a collapsed model scores like one of these.
    A constant prediction does not change under PGD or noise, so this also is their sweep."""
    y = load_split(manifest, "test").labels.numpy()
    rows = [{"model": name, "metric": k, "condition": "test", "value": v, "note": "predicts one class for every crop"}
            for name, constant in (("all_damaged", 1), ("all_undamaged", 0))
            for k, v in binary_metrics(y, np.full_like(y, constant)).items()]
    return _frame(rows, dataset, REFERENCES)


def run_robustness(params, manifest: Path, checkpoint: Path, dataset: str) -> pd.DataFrame:
    dev, bs = device(), params["evaluate"]["batch_size"]
    g, d, ckpt = _load_any(checkpoint, dev)
    test = load_split(manifest, "test")
    if g is None:
        rows, model = robustness.sweep(test, d, None, params["evaluate"], bs, params["seed"], dev), "baseline"
    else:
        rows, model = robustness.sweep(test, robustness.RealLogits(d), d, params["evaluate"], bs, params["seed"], dev), "D"
    return _frame(rows, dataset, ckpt["summary"]["run"], model, note=_run_note(ckpt).lstrip("; "))


def run_uncertainty(params, manifest: Path, checkpoint: Path, dataset: str) -> pd.DataFrame:
    dev, bs = device(), params["evaluate"]["batch_size"]
    g, d, ckpt = load_gan(checkpoint, dev)
    test = load_split(manifest, "test")
    out = predict(test, d=d, g=g, batch_size=bs, device=dev, seed=params["seed"])
    rows = uncertainty.fakeness_correlation(out["d_probs"], out["g_probs"], test.labels)
    return _frame(rows, dataset, ckpt["summary"]["run"], note=f"{len(test)} test crops")


def _saliency_rows(method: str, val_maps, val_masks, test_maps, test_split, tmask, quantiles, note: str):
    """Threshold chosen on val, per-crop and summary rows on test, for one method's maps."""
    t, val_iou = saliency.choose_threshold(val_maps, val_masks, quantiles)
    scores = saliency.score_test(test_maps[tmask], test_split.masks.numpy()[tmask], t)
    coverage = float(scores["coverage"].mean())
    note = f"{method}: threshold {t:.4g} (best of quantiles {quantiles} on {len(val_maps)} val damaged crops){note}"
    if coverage > saliency.NEARLY_ALL_PIXELS:
        note += f"; WARNING: its masks cover {coverage:.0%} of the pixels (nearly all): not a localisation"
    paths = np.array(test_split.paths)[tmask]
    rows = []
    for metric in ("iou", "f1_tol2"):
        rows += [{"model": method, "metric": metric, "condition": path, "value": v, "note": note}
                 for path, v in zip(paths, scores[metric])]
        rows += [{"model": method, "metric": f"{metric}_{stat}", "condition": "test", "value": float(fn(scores[metric])), "note": note}
                 for stat, fn in (("mean", np.mean), ("median", np.median))]
    rows += [{"model": method, "metric": "threshold", "condition": "val", "value": t, "note": note},
             {"model": method, "metric": "val_iou", "condition": "val", "value": val_iou, "note": note},
             {"model": method, "metric": "coverage", "condition": "test", "value": coverage, "note": note}]
    return rows, t


def _masked_splits(manifest: Path):
    val, test = load_split(manifest, "val"), load_split(manifest, "test")
    if test.masks is None:
        raise UserError(f"{manifest}: crops have no masks, so saliency IoU does not apply to this data set")
    return val, test, (val.labels == 1).numpy(), (test.labels == 1).numpy()


def run_saliency(params, manifest: Path, checkpoint: Path, dataset: str, examples_out: Path) -> pd.DataFrame:
    """IoU and f1_tol2 per damaged test crop for a GAN run (counterfactual maps and Grad-CAM on
    its D) or a supervised segmenter; thresholds chosen on val."""
    dev, bs, seed = device(), params["evaluate"]["batch_size"], params["seed"]
    cfg = params["evaluate"]["saliency"]
    val, test, vmask, tmask = _masked_splits(manifest)
    ckpt = load_checkpoint(checkpoint)
    run_note = _run_note(ckpt)
    if ckpt["kind"] == "segmenter":
        model, ckpt = load_segmenter(ckpt, dev)
        methods = [("segmenter", lambda s: predict_masks(model, s, bs, dev).numpy())]
    else:
        g, d, ckpt = load_gan(ckpt, dev)
        methods = [("counterfactual", lambda s: saliency.counterfactual_maps(g, s, bs, seed, dev, cfg["smooth_sigma"])),
                   ("gradcam", lambda s: saliency.gradcam_maps(d, s, bs, dev))]
    rows, example_maps = [], {}
    for method, make in methods:
        extra = f"; maps blurred with a {cfg['smooth_sigma']} px Gaussian" if method == "counterfactual" and cfg["smooth_sigma"] > 0 else ""
        test_maps = make(test)
        new, t = _saliency_rows(method, make(val)[vmask], val.masks.numpy()[vmask], test_maps, test, tmask,
                                cfg["quantiles"], extra + run_note)
        rows += new
        example_maps[method] = test_maps
        if method == "segmenter":  # a crop is called damaged when its predicted mask is not empty
            predicted = saliency.binarize(test_maps, t).reshape(len(test), -1).any(1)
            rows += [{"model": method, "metric": k, "condition": "test", "value": v, "note": rows[-1]["note"]}
                     for k, v in binary_metrics(test.labels.numpy(), predicted).items()]
    _save_saliency_examples(examples_out, test, example_maps)
    return _frame(rows, dataset, ckpt["summary"]["run"])


def run_saliency_references(params, manifest: Path, dataset: str, examples_out: Path) -> pd.DataFrame:
    """The training-free maps, scored by the same rule as every learned map: `local_contrast`
    (its polarity, dark / bright / both, chosen on val like the threshold), `random` and
    `all_pixels`. A 'run' named `references` with no checkpoint."""
    cfg = params["evaluate"]["saliency"]
    val, test, vmask, tmask = _masked_splits(manifest)
    lc = cfg["local_contrast"]
    val_masks = val.masks.numpy()[vmask]
    best = None
    for polarity in saliency.POLARITIES:
        maps = saliency.local_contrast_maps(val.images[vmask], lc["sigma_narrow"], lc["sigma_wide"], polarity)
        _, score = saliency.choose_threshold(maps, val_masks, cfg["quantiles"])
        if best is None or score > best[1]:
            best = (polarity, score, maps)
    polarity, _, lc_val = best
    shape = tuple(test.images.shape[:1]) + tuple(test.images.shape[2:])
    methods = {
        "local_contrast": (lc_val, saliency.local_contrast_maps(test.images, lc["sigma_narrow"], lc["sigma_wide"], polarity),
                           f"; blur {lc['sigma_narrow']} vs {lc['sigma_wide']} px, polarity '{polarity}' chosen on val"),
        "random": (saliency.random_maps(val_masks.shape, params["seed"]), saliency.random_maps(shape, params["seed"] + 1),
                   "; uniform noise: the chance level"),
        "all_pixels": (saliency.all_pixel_maps(val_masks.shape), saliency.all_pixel_maps(shape), "; every pixel: the degenerate mask"),
    }
    rows, example_maps = [], {}
    for method, (val_maps, test_maps, note) in methods.items():
        rows += _saliency_rows(method, val_maps, val_masks, test_maps, test, tmask, cfg["quantiles"], note)[0]
        example_maps[method] = test_maps
    _save_saliency_examples(examples_out, test, example_maps)
    return _frame(rows, dataset, REFERENCES)


def _save_saliency_examples(path: Path, test, maps: dict) -> None:
    idx = torch.nonzero(test.labels == 1).flatten()[:N_EXAMPLES].numpy()
    np.savez_compressed(path, x=test.images[idx].numpy(), mask=test.masks[idx].numpy(),
                        **{name: m[idx] for name, m in maps.items()})
