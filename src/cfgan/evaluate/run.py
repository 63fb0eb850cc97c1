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
from ..config import run_defect, split_seed
from ..methods import method_of
from ..data.datasets import load_split, split_labels, tasks
from ..errors import UserError
from ..train.baselines import load_baseline
from ..train.common import load_checkpoint
from ..train.gan import load_gan
from ..train.segmenters import load_segmenter, predict_masks
from ..train.unet_classifier import load_unet_classifier
from . import model_maps, robustness, saliency, threshold_free, uncertainty  # fid is imported by its two steps: pytorch-fid pulls in torchvision
from ..inference import predict, real_class_probs
from .. import maps
from ..metrics import binarize, binary_metrics
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
    for when, record in (("trained", trained), ("evaluated", here)):  # a GPU's name likewise (metrics.json's provenance reads it)
        if record.get("gpu"):
            note += f"; {when} on GPU {record['gpu']}"
    if ckpt.get("summary", {}).get("val_maps", {}).get("selected_on") == "val_map_iou":
        tolerance = ckpt["summary"]["val_maps"].get("tolerance")
        rule = f"the best val score among steps within {tolerance:g} of the best maps' val IoU" if tolerance else "the maps' val IoU"
        note += f"; step {ckpt['summary']['best_step']} selected on {rule} (val masks read: train.val_maps.select)"
    for key, who, option in (("ema_g", "G", "train.ema_g"), ("ema_d", "D", "train.ema_d"), ("ema", "the twin", "baseline.ema")):
        if ckpt.get("summary", {}).get(key):  # the network every row evaluates is an average, not the last one trained
            note += f"; {who} kept as an average of its weights ({option} {ckpt['summary'][key]:g})"
    signs = ckpt.get("summary", {}).get("collapse") or []
    return note + (f"; COLLAPSED run {ckpt['summary']['run']}: " + "; ".join(signs) if signs else "")



def noise_seed(ckpt: dict, params: dict) -> int:
    """The seed of G's noise z when a run is evaluated: the run's own training seed (its checkpoint's
    summary, else the `-s{seed}` of its name), so that z is fixed per seed (docs/method.md): each seed
    of a configuration is evaluated with its own z draws, the same run always with the same ones, as
    its validation in training drew them. `params["seed"]` only for a checkpoint that names no seed."""
    summary = ckpt.get("summary") or {}
    seed = summary.get("seed")
    if seed is None:
        seed = split_seed(str(summary.get("run", "")))[1]
    return int(params["seed"] if seed is None else seed)


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
        out = predict(test, g=g, batch_size=bs, device=dev, seed=noise_seed(ckpt, params), keep_counterfactuals=True)
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


# How table 2 and figure 3 name a plain (non-adversarial) classifier's rows, by its checkpoint's kind
PLAIN_MODELS = {"baseline": "baseline", "unet_classifier": "unet classifier (non-adversarial)"}


def _load_any(checkpoint: Path, cx: Compute):
    """(G, D, checkpoint) of a GAN run; (None, the classifier, checkpoint) of a plain one: the twin
    (D's backbone) or the non-adversarial UNet classifier (G's architecture, its head's logits)."""
    ckpt = load_checkpoint(checkpoint)
    if ckpt["kind"] == "gan":
        return load_gan(ckpt, cx)
    if ckpt["kind"] == "unet_classifier":
        model, ckpt = load_unet_classifier(ckpt, cx)
        return None, model, ckpt
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
                      seed=noise_seed(ckpt, params))
        y = test.labels.numpy()
        plain = PLAIN_MODELS[ckpt["kind"]] if g is None else None
        models = {plain: out["d_probs"]} if g is None else {"D": real_class_probs(out["d_logits"]), "G": out["g_probs"]}
        # image AUROC ranks crops by the damaged-minus-undamaged logit (the damaged probability's ranking, without
        # its float32 saturation at 0 and 1 tying the surest crops); G's head keeps only its probabilities
        margin = out["d_logits"][:, 1] - out["d_logits"][:, 0]
        scores = {plain: margin} if g is None else {"D": margin, "G": out["g_probs"][:, 1]}
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
        model, name = (_twin_task(d, ckpt, run), PLAIN_MODELS[ckpt["kind"]]) if g is None else (robustness.RealLogits(d), "D")
        # params["seed"], not the run's: every model and seed is attacked on the same crops with the same
        # Gaussian draws (the UNet classifier's own z is its run's: HeadClassifier)
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
        out = predict(test, d=d, g=g, batch_size=bs, device=dev, seed=noise_seed(ckpt, params))
        rows = uncertainty.fakeness_correlation(out["d_logits"], out["g_probs"], test.labels)
        return tidy_frame(rows, dataset, run, note=f"{len(test)} test crops{_run_note(ckpt, cx)}")
    return _per_task(manifest, ckpt["summary"]["run"], evaluate, cx)


FORM_WORDS = {"counterfactual": "map form", "gradcam": "scaling", "posthoc": "map form"}
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
    """IoU and f1_tol2 per damaged test crop for a GAN run (counterfactual maps, Grad-CAM on its D and the
    Captum attributions of D), a plain twin (Grad-CAM and the attributions of the twin), a post-hoc explainer
    or a supervised segmenter; forms, turns and thresholds chosen on val; per task on multi-class data.
    Beside them the threshold-free pixel AUROC, AUPRO, ODS and OIS of the same maps (`saliency_rows`); the
    attribution subset and every row's cost per crop: evaluate/model_maps.py."""
    cx = resolve(params)
    dev, bs = cx.device, params["evaluate"]["batch_size"]
    cfg = params["evaluate"]["saliency"]
    ckpt = load_checkpoint(checkpoint)
    seed = noise_seed(ckpt, params)  # G's z for the counterfactual maps: the run's own
    run_note = _run_note(ckpt, cx)
    turns = cfg.get("turns", [1])  # evaluate.saliency.turns (absent: [1], one pass): a candidate with each form, for every map
    sigma = cfg["smooth_sigma"]
    if ckpt["kind"] == "segmenter":
        model, ckpt = load_segmenter(ckpt, cx)
        base = [model_maps.model_method("segmenter", "the segmenter",
                                        lambda s, forms: {"probability": predict_masks(model, s, bs, dev).numpy()}, ["probability"], turns)]
        methods_of = lambda run: base  # noqa: E731
    elif ckpt["kind"] == "posthoc":  # Charachon et al.'s explainer of a frozen classifier (train/posthoc.py)
        from ..train.posthoc import classifier_rows, saliency_method
        method, explained, posthoc_note = saliency_method(ckpt, cx, cfg, bs)
        run_note = posthoc_note + run_note
        name, make, names = method
        posthoc = [model_maps.MapMethod(name, "its classifier", make, list(names), words=FORM_WORDS.get(name, "map form"),
                                        turned="Gs's and Ga's outputs")]
        methods_of = lambda run: posthoc  # noqa: E731
    elif ckpt["kind"] == "baseline":  # the plain twin: Grad-CAM and the attributions of the same backbone without G
        twin, ckpt = load_baseline(ckpt, cx)

        def methods_of(run):
            model = _twin_task(twin, ckpt, run)
            return [model_maps.model_method("gradcam", "the plain twin", lambda s, forms: {
                        f: saliency.gradcam_maps(model, s, bs, dev, f, layers_of=twin) for f in forms},
                        cfg.get("gradcam_scalings", ["per_crop"]), turns, words=FORM_WORDS["gradcam"]),
                    *model_maps.attribution_methods(model, "the plain twin", cfg, bs, dev, params["seed"])]
    else:
        g, d, ckpt = load_gan(ckpt, cx)
        # each method's candidates (a form, and each count of the crop's turns) are scored on val and the best is
        # applied to test, as the threshold is; the counterfactual's turns average G's output, every other map's the map
        candidates = [maps.candidate_name(f, k) for k in turns for f in cfg.get("counterfactual_forms", ["abs"])]
        gan = [model_maps.MapMethod("counterfactual", "G (against D)",
                                    lambda s, names: maps.counterfactual_candidates(g, s, bs, seed, dev, sigma, names), candidates,
                                    extra=f"; maps blurred with a {sigma} px Gaussian" if sigma > 0 else "",
                                    turned="G's counterfactual"),
               model_maps.model_method("gradcam", "D", lambda s, forms: {f: saliency.gradcam_maps(d, s, bs, dev, f) for f in forms},
                                       cfg.get("gradcam_scalings", ["per_crop"]), turns, words=FORM_WORDS["gradcam"]),
               *model_maps.attribution_methods(d, "D", cfg, bs, dev, params["seed"])]
        methods_of = lambda run: gan  # noqa: E731
    frames, examples = [], {}
    for defect, run in tasks(manifest, ckpt["summary"]["run"]):
        val, test, vmask, tmask = masked_splits(manifest, defect)
        with cx.autocast():  # the maps themselves are computed in fp32 from the models' outputs
            rows, example_maps, chosen = model_maps.score_methods(methods_of(run), val, test, vmask, tmask, cfg, params["seed"],
                                                                  run_note)
        if "counterfactual" in chosen and cfg.get("fusion", False):
            cf = chosen["counterfactual"]
            rows += _fusion_rows(cf.val_maps, cf.test_maps, val, test, vmask, tmask, cfg, f"; its map form '{cf.form}'" + cf.note)
        if "posthoc" in chosen:  # the explained classifier's own calls, table 5's classifier columns
            rows += classifier_rows(explained, test, bs, cx, chosen["posthoc"].note)
        if "segmenter" in chosen:  # a crop is called damaged when its predicted mask is not empty
            sg = chosen["segmenter"]
            predicted = binarize(sg.test_maps, sg.threshold).reshape(len(test), -1).any(1)
            rows += [{"model": "segmenter", "metric": k, "condition": "test", "value": v, "note": sg.note}
                     for k, v in binary_metrics(test.labels.numpy(), predicted).items()]
        examples[defect] = (test, example_maps)
        frames.append(tidy_frame(rows, dataset, run))
    save_saliency_examples(examples_out, examples)
    return pd.concat(frames, ignore_index=True)
