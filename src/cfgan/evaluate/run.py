"""Evaluation steps: each loads a checkpoint and the test split, and returns tidy rows.

On a multi-class manifest every step evaluates one task at a time (`datasets.tasks`): a
one-vs-rest GAN (`-k{class}` in its name) on its own class against the undamaged crops, a
class-agnostic model (plain twin, segmenter) on each class in turn, its rows named `run-k{class}`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..compute import Compute, resolve
from ..config import run_defect
from ..methods import method_of
from ..data.datasets import load_split, split_labels, tasks
from ..errors import UserError
from ..train.baselines import load_baseline
from ..train.common import load_checkpoint
from ..train.gan import load_gan
from ..train.segmenters import load_segmenter, predict_masks
from . import robustness, saliency, threshold_free, uncertainty  # fid is imported by its two steps: pytorch-fid pulls in torchvision
from ..inference import predict, real_class_probs
from .. import maps
from ..metrics import binarize, binary_metrics, choose_form
from .references import N_EXAMPLES, local_contrast_pair, masked_splits, saliency_rows, save_saliency_examples
from .tidy import tidy_frame


def _run_note(ckpt: dict, cx: Compute) -> str:
    """What every table row of a run carries: the method beyond the paper that trained it (none
    under `method: paper`), the precision it was trained and evaluated at, and a warning when
    training collapsed (see train/gan.py). A checkpoint selected on its maps' val IoU
    (`train.val_maps.select`) says so: that selection read the val masks; so does one whose G, D or
    twin is an average of its weights (`train.ema_g`, `train.ema_d`, `baseline.ema`)."""
    trained = ckpt.get("compute", {})
    method = method_of(ckpt.get("params", {}))
    note = (f"; method {method}" if method != "paper" else "") + f"; trained at {trained.get('precision', '?')} on {trained.get('device', '?')}, evaluated at {cx.precision} on {cx.device}"
    here = cx.describe()
    evaluated_layers = here.get("fp32_image_layers", False)  # recorded as the checkpoint records it (bf16 only)
    if trained.get("fp32_image_layers", False) or evaluated_layers:  # compute.fp32_image_layers: which models read the image in fp32
        note += f" (image layers in fp32: {trained.get('fp32_image_layers', False)} in training, {evaluated_layers} in evaluation)"
    if "cpu" in here:  # the same code repeats its bits on one CPU, not across CPU generations: say which
        if trained.get("device") != "cpu":
            note += f"; evaluated on CPU {here['cpu']}"
        elif trained.get("cpu") == here["cpu"]:
            note += f"; CPU {here['cpu']}"
        else:  # checkpoints of older code do not record their CPU
            note += f"; trained on CPU {trained.get('cpu', 'not recorded')}, evaluated on CPU {here['cpu']}"
    if ckpt.get("summary", {}).get("val_maps", {}).get("selected_on") == "val_map_iou":
        tolerance = ckpt["summary"]["val_maps"].get("tolerance")
        rule = f"the best val score among steps within {tolerance:g} of the best maps' val IoU" if tolerance else "the maps' val IoU"
        note += f"; step {ckpt['summary']['best_step']} selected on {rule} (val masks read: train.val_maps.select)"
    for key, who, option in (("ema_g", "G", "train.ema_g"), ("ema_d", "D", "train.ema_d"), ("ema", "the twin", "baseline.ema")):
        if ckpt.get("summary", {}).get(key):  # the network every row evaluates is an average, not the last one trained
            note += f"; {who} kept as an average of its weights ({option} {ckpt['summary'][key]:g})"
    signs = ckpt.get("summary", {}).get("collapse") or []
    return note + (f"; COLLAPSED run {ckpt['summary']['run']}: " + "; ".join(signs) if signs else "")



def _examples(split, k=N_EXAMPLES) -> torch.Tensor:
    """First k test crops of each class, undamaged first (a fixed, reproducible choice)."""
    labels = split.labels
    idx = torch.cat([torch.nonzero(labels == c).flatten()[:k] for c in (0, 1)])
    return idx


def run_fid_real(params, manifest: Path, out: Path) -> str:
    """Inception features of the real test crops, once per data set: every run's FID step reuses
    them instead of pushing the same real images through Inception again."""
    from . import fid

    cx = resolve(params)
    dev, bs = cx.device, params["evaluate"]["batch_size"]
    test = load_split(manifest, "test")
    cfg = params["evaluate"]["fid"]
    net, note = fid.inception(cfg["dims"], cfg["inception_weights"], cfg["allow_untrained_inception"], dev)
    note = f"{note}; Inception at {cx.precision}"
    with cx.autocast():
        feats = fid.activations(net, test.images.float() / 255, bs, dev)
    fid.save_features(out, feats, test.labels.numpy(), note, cfg["dims"], manifest)
    return f"{len(feats)} real test crops, {cfg['dims']} features; {note}"


def run_fid(params, manifest: Path, checkpoint: Path, real_features: Path, dataset: str, examples_out: Path) -> pd.DataFrame:
    from . import fid

    cx = resolve(params)
    dev, bs = cx.device, params["evaluate"]["batch_size"]
    g, d, ckpt = load_gan(checkpoint, cx)
    [(defect, run)] = tasks(manifest, ckpt["summary"]["run"])  # a GAN run has one task
    cfg = params["evaluate"]["fid"]
    all_labels, keep = split_labels(manifest, "test", defect)  # the real features cover every test crop
    real, labels, real_note = fid.load_features(real_features, cfg["dims"], all_labels)
    real, labels = real[keep], labels[keep]
    test = load_split(manifest, "test", defect=defect)
    with cx.autocast():
        out = predict(test, g=g, batch_size=bs, device=dev, seed=params["seed"], keep_counterfactuals=True)
    x_cf = out["x_cf"].float()
    net, note = fid.inception(cfg["dims"], cfg["inception_weights"], cfg["allow_untrained_inception"], dev)
    note = f"{note}; Inception at {cx.precision}"
    if note != real_note:
        raise UserError(f"{real_features} was computed with '{real_note}', this step has '{note}': rerun the fid-real step")
    with cx.autocast():
        fake = fid.activations(net, x_cf, bs, dev)
    rows = []
    for subset, (value, n_real, n_fake) in fid.fid_subsets(real, fake, labels).items():
        rows.append({"metric": "fid", "condition": subset, "value": value,
                     "note": f"{note}; {cfg['dims']} features; {n_real} real vs {n_fake} counterfactuals{_run_note(ckpt, cx)}"})
    idx = _examples(test)
    np.savez_compressed(examples_out, x=(test.images[idx].numpy()), x_cf=(x_cf[idx].numpy() * 255).round().astype(np.uint8),
                        labels=test.labels[idx].numpy())
    return tidy_frame(rows, dataset, run, "G")


def _load_any(checkpoint: Path, cx: Compute):
    ckpt = load_checkpoint(checkpoint)
    if ckpt["kind"] == "gan":
        return load_gan(ckpt, cx)
    model, ckpt = load_baseline(ckpt, cx)
    return None, model, ckpt


def _twin_task(model, ckpt: dict, run: str):
    """The plain twin as one task's binary classifier: on multi-class data it is one K+1-class
    model, seen through its undamaged and this defect class's logits."""
    classes = ckpt["summary"].get("classes")
    return robustness.Columns(model, [0, classes.index(run_defect(run))]) if classes else model


def _per_task(manifest: Path, run: str, evaluate, cx: Compute) -> pd.DataFrame:
    """`evaluate(test split, run name)` for each task of the run (see the module's docstring), at the
    step's precision."""
    with cx.autocast():
        return pd.concat([evaluate(load_split(manifest, "test", defect=defect), name) for defect, name in tasks(manifest, run)],
                         ignore_index=True)


def run_classify(params, manifest: Path, checkpoint: Path, dataset: str) -> pd.DataFrame:
    cx = resolve(params)
    dev, bs = cx.device, params["evaluate"]["batch_size"]
    g, d, ckpt = _load_any(checkpoint, cx)

    def evaluate(test, run):
        out = predict(test, d=d if g is not None else _twin_task(d, ckpt, run), g=g, batch_size=bs, device=dev,
                      seed=params["seed"])
        y = test.labels.numpy()
        models = {"baseline": out["d_probs"]} if g is None else {"D": real_class_probs(out["d_logits"]), "G": out["g_probs"]}
        # image AUROC ranks crops by the damaged-minus-undamaged logit (the damaged probability's ranking, without
        # its float32 saturation at 0 and 1 tying the surest crops); G's head keeps only its probabilities
        margin = out["d_logits"][:, 1] - out["d_logits"][:, 0]
        scores = {"baseline": margin} if g is None else {"D": margin, "G": out["g_probs"][:, 1]}
        rows = [{"model": m, "metric": k, "condition": "test", "value": v} for m, probs in models.items()
                for k, v in {**binary_metrics(y, probs.argmax(1).numpy()),
                             "auroc": threshold_free.image_auroc(y, scores[m].numpy())}.items()]
        return tidy_frame(rows, dataset, run, note=_run_note(ckpt, cx).lstrip("; "))
    return _per_task(manifest, ckpt["summary"]["run"], evaluate, cx)


def run_robustness(params, manifest: Path, checkpoint: Path, dataset: str) -> pd.DataFrame:
    cx = resolve(params)
    dev, bs = cx.device, params["evaluate"]["batch_size"]
    g, d, ckpt = _load_any(checkpoint, cx)
    def evaluate(test, run):
        model, name = (_twin_task(d, ckpt, run), "baseline") if g is None else (robustness.RealLogits(d), "D")
        attacked = robustness.stratified_subset(test, params["evaluate"].get("robustness_crops"), params["seed"])
        rows = robustness.sweep(attacked, model, None if g is None else d, params["evaluate"], bs, params["seed"], dev)
        note = _run_note(ckpt, cx).lstrip("; ")
        if len(attacked) < len(test):
            note = "; ".join(filter(None, [note, f"PGD and noise on {len(attacked)} of {len(test)} test crops (class-stratified)"]))
        return tidy_frame(rows, dataset, run, name, note=note)
    return _per_task(manifest, ckpt["summary"]["run"], evaluate, cx)


def run_uncertainty(params, manifest: Path, checkpoint: Path, dataset: str) -> pd.DataFrame:
    cx = resolve(params)
    dev, bs = cx.device, params["evaluate"]["batch_size"]
    g, d, ckpt = load_gan(checkpoint, cx)

    def evaluate(test, run):
        out = predict(test, d=d, g=g, batch_size=bs, device=dev, seed=params["seed"])
        rows = uncertainty.fakeness_correlation(out["d_logits"], out["g_probs"], test.labels)
        return tidy_frame(rows, dataset, run, note=f"{len(test)} test crops{_run_note(ckpt, cx)}")
    return _per_task(manifest, ckpt["summary"]["run"], evaluate, cx)


FORM_WORDS = {"counterfactual": "map form", "gradcam": "scaling"}
FUSION = "counterfactual_x_local_contrast"


def _fusion_rows(cf_val, cf_test, val, test, vmask, tmask, cfg: dict, note: str) -> list[dict]:
    """`evaluate.saliency.fusion` (beyond the paper): the counterfactual map times `local_contrast`
    (its polarity chosen on val), both clipped at 0: the learned map's where, the image's thin
    structure. A row of its own, never the counterfactual's (as Koenig et al. fuse CAMs with intensity)."""
    lc_val, lc_test, polarity = local_contrast_pair(val, test, vmask, cfg)
    fused_val, fused_test = (np.clip(a, 0, None) * np.clip(b, 0, None) for a, b in ((cf_val, lc_val), (cf_test, lc_test)))
    return saliency_rows(FUSION, fused_val, val.masks.numpy()[vmask], fused_test, test, tmask, cfg["quantiles"],
                         f"; local_contrast polarity '{polarity}' chosen on val" + note)[0]


def run_saliency(params, manifest: Path, checkpoint: Path, dataset: str, examples_out: Path) -> pd.DataFrame:
    """IoU and f1_tol2 per damaged test crop for a GAN run (counterfactual maps and Grad-CAM on
    its D) or a supervised segmenter; thresholds chosen on val; per task on multi-class data. Beside
    them the threshold-free pixel AUROC, AUPRO, ODS and OIS of the same maps (`saliency_rows`)."""
    cx = resolve(params)
    dev, bs, seed = cx.device, params["evaluate"]["batch_size"], params["seed"]
    cfg = params["evaluate"]["saliency"]
    ckpt = load_checkpoint(checkpoint)
    run_note = _run_note(ckpt, cx)
    if ckpt["kind"] == "segmenter":
        model, ckpt = load_segmenter(ckpt, cx)
        methods = [("segmenter", lambda s, forms: {"probability": predict_masks(model, s, bs, dev).numpy()}, ["probability"])]
    else:
        g, d, ckpt = load_gan(ckpt, cx)
        # each method's candidate forms are scored on val and the best is applied to test, as the threshold is
        # evaluate.saliency.turns (absent: [1], one pass): each count of flips and quarter turns is a candidate with each form
        candidates = [maps.candidate_name(f, k) for k in cfg.get("turns", [1]) for f in cfg.get("counterfactual_forms", ["abs"])]
        methods = [("counterfactual", lambda s, names: maps.counterfactual_candidates(g, s, bs, seed, dev, cfg["smooth_sigma"], names),
                    candidates),
                   ("gradcam", lambda s, forms: {f: saliency.gradcam_maps(d, s, bs, dev, f) for f in forms}, cfg.get("gradcam_scalings", ["per_crop"]))]
    frames, examples = [], {}
    for defect, run in tasks(manifest, ckpt["summary"]["run"]):
        val, test, vmask, tmask = masked_splits(manifest, defect)
        val_masks = val.masks.numpy()[vmask]
        rows, example_maps = [], {}
        for method, make, forms in methods:
            extra = f"; maps blurred with a {cfg['smooth_sigma']} px Gaussian" if method == "counterfactual" and cfg["smooth_sigma"] > 0 else ""
            with cx.autocast():  # the maps themselves are computed in fp32 from the models' outputs
                candidates = make(val, forms)
                form = choose_form({f: m[vmask] for f, m in candidates.items()}, val_masks, cfg["quantiles"])
                val_maps, test_maps = candidates[form], make(test, [form])[form]
            if len(forms) > 1:
                extra += f"; {FORM_WORDS[method]} '{form}' chosen on val from {list(forms)}"
            new, t = saliency_rows(method, val_maps[vmask], val_masks, test_maps, test, tmask,
                                    cfg["quantiles"], extra + run_note)
            rows += new
            example_maps[method] = test_maps
            if len(forms) > 1:  # figure 4 names the form it shows (the paper's one form: nothing to say)
                example_maps[f"{method}_form"] = form
            if method == "counterfactual" and cfg.get("fusion", False):
                rows += _fusion_rows(val_maps[vmask], test_maps, val, test, vmask, tmask, cfg, f"; its map form '{form}'" + extra + run_note)
            if method == "segmenter":  # a crop is called damaged when its predicted mask is not empty
                predicted = binarize(test_maps, t).reshape(len(test), -1).any(1)
                rows += [{"model": method, "metric": k, "condition": "test", "value": v, "note": rows[-1]["note"]}
                         for k, v in binary_metrics(test.labels.numpy(), predicted).items()]
        examples[defect] = (test, example_maps)
        frames.append(tidy_frame(rows, dataset, run))
    save_saliency_examples(examples_out, examples)
    return pd.concat(frames, ignore_index=True)
