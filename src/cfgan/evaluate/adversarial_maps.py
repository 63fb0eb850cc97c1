"""Adversarial samples explained (issue 47, item 5; not in the paper): how far each explainer's map moves when a
test crop is replaced by its targeted PGD adversarial, for D and for its plain twin.

The paper reads D as harder to fool than its twin (Figure 3) and its explanations as the sounder ones; if so, the
perturbation that moves a model's decision should also move D's maps less than the twin's. Measured here, per run
(a GAN run: D; a plain twin: the twin), on the same crops for every run and twin:

- the crops: a class-stratified subset of at most `evaluate.adversarial_maps.crops` test crops per task, drawn with
  params' `seed` (`attacks.stratified_subset`, as the robustness step draws its crops);
- the attack: the robustness step's (`attacks.pgd`): targeted at the opposite class of the crop's label,
  `evaluate.pgd.steps` steps within `evaluate.pgd.eps`, at each step size of `evaluate.adversarial_maps.step_sizes`,
  against the model explained (D's two real-class logits, or the twin);
- the explainers, each drawing a map of the clean crop and of every adversarial one (the same noise, seeds and
  coalitions for both, so that only the input differs): for a GAN run G's counterfactual map (G is not attacked: it
  explains D's adversarial crop), Grad-CAM of D and the Captum attributions of D (evaluate/attributions.py); for a
  twin Grad-CAM and the attributions of the twin and, given `--posthoc`, its post-hoc explainer (Charachon et al.,
  train/posthoc.py), whose Gs and Ga read the adversarial crop;
- one threshold per method, the saliency step's rule (evaluate/saliency.py): on data with masks the map form (and
  turns) and the threshold (the best of `evaluate.saliency.quantiles` of the method's val maps) are chosen on the
  val damaged crops of the saliency step's attribution subset (`evaluate.saliency.attribution_crops`, params' seed:
  the val crops Table 5's `subset` rows choose on); on data without masks there is nothing to choose on, so the form
  is the method's first candidate and the threshold the `evaluate.adversarial_maps.quantile` quantile of its maps of
  those val crops. The same absolute threshold binarises the clean and the adversarial map.

Rows (`COLUMNS`: evaluate/tidy.py's, with `method` and `strength`): `model` the attacked model (`D` or `twin`),
`method` the explainer (`decision` for the model's own calls). Per crop (`condition` = the crop's path): `map_iou`,
the IoU of the binarised clean and adversarial maps (1: the map did not move; two empty masks count 1); on damaged
crops of data with masks `mask_iou_clean` and `mask_iou_adv`, each map's IoU with the true mask; `flipped` (method
`decision`), 1 where the adversarial changed the model's call. Summaries (`condition` = `test`): their means,
`map_iou_flipped` (the mean over the crops whose call flipped, where any did), `coverage_clean` / `coverage_adv`
(the fraction of pixels selected: a map that selects none or all of them cannot move) and `flip_rate`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import maps
from ..attacks import RealLogits, pgd, stratified_subset
from ..compute import resolve
from ..data.datasets import Split, load_split, tasks
from ..errors import UserError
from ..metrics import binarize, choose_form, choose_threshold, iou
from . import model_maps, saliency
from .references import attribution_subset
from .run import _load_any, _run_note, _twin_task, noise_seed

COLUMNS = ["dataset", "run", "model", "method", "strength", "metric", "condition", "value", "note"]
EXAMPLES = ((1, 2), (0, 1))  # Figure 6's crops: the first 2 damaged and the first undamaged crop of the attacked subset
DECISION = "decision"        # the method of the rows about the model's own calls


def adversarial_split(split: Split, x_adv: torch.Tensor) -> Split:
    """`split` with its crops replaced by adversarial ones (N x 3 x H x W in [0, 1]), kept in float (x 255) so that
    `Split.batch` returns them as they are: a uint8 copy would round away perturbations under one grey level."""
    return Split(x_adv.detach().float().cpu() * 255, split.labels, split.masks, split.paths, split.classes)


@torch.no_grad()
def calls(classifier, split: Split, batch_size: int, device) -> torch.Tensor:
    """The classifier's class (argmax of its two logits) of every crop."""
    out = []
    for start in range(0, len(split), batch_size):
        x, _ = split.batch(torch.arange(start, min(start + batch_size, len(split))), device)
        out.append(classifier(x).float().argmax(1).cpu())
    return torch.cat(out)


def attack(classifier, split: Split, step_size: float, pgd_cfg: dict, batch_size: int, device) -> Split:
    """The robustness step's targeted PGD (the opposite class of each crop's label) of every crop, as a split."""
    parts = []
    for start in range(0, len(split), batch_size):
        x, y = split.batch(torch.arange(start, min(start + batch_size, len(split))), device)
        parts.append(pgd(classifier, x, y, step_size, pgd_cfg["steps"], pgd_cfg.get("eps")).detach().cpu())
    return adversarial_split(split, torch.cat(parts))


def val_choice(method: model_maps.MapMethod, val: Split, quantiles, fallback_q: float) -> tuple[str, float, str]:
    """(candidate, threshold, what the note says) of one method on the val damaged crops `val`: the saliency
    step's rule where they have masks, else the first candidate at the `fallback_q` quantile of its maps."""
    if val.masks is not None:
        drawn = method.draw(val, method.candidates)
        masks = val.masks.numpy()
        form = choose_form(drawn, masks, quantiles)
        t = choose_threshold(drawn[form], masks, quantiles)[0]
        chosen = f"form '{form}' chosen from {list(method.candidates)}, " if len(method.candidates) > 1 else ""
        return form, t, (f"{chosen}threshold {t:.4g} (best of quantiles {list(quantiles)} of its maps) chosen on {len(val)} "
                         f"val damaged crops, the saliency step's rule")
    form = method.candidates[0]
    t = float(np.quantile(method.draw(val, [form])[form], fallback_q))
    return form, t, (f"no masks: form '{form}', threshold {t:.4g} = the {fallback_q:g} quantile of its maps of {len(val)} "
                     f"val damaged crops (evaluate.adversarial_maps.quantile)")


def movement(methods: list[model_maps.MapMethod], classifier, model: str, val: Split, test: Split, params: dict,
             device, note: str = "") -> tuple[list[dict], dict]:
    """The rows (see the module's docstring) of one attacked model and its explainers on one task, and Figure 6's
    examples. `classifier` gives the two logits the attack targets and whose calls are compared; `val` and `test`
    are the task's whole splits."""
    ev, cfg = params["evaluate"], params["evaluate"]["saliency"]
    acfg, bs, seed = ev["adversarial_maps"], ev["batch_size"], params["seed"]
    crops = stratified_subset(test, acfg.get("crops"), seed)
    vdam = (val.labels == 1).numpy()
    n_val = cfg.get("attribution_crops")
    vsub = attribution_subset(vdam, int(vdam.sum()) if n_val is None else n_val, seed)
    val_crops = val.subset(torch.as_tensor(vsub, dtype=torch.long))
    if len(val_crops) == 0:
        raise UserError("the val split has no damaged crop: no threshold can be chosen for the adversarial maps")
    strengths = [float(s) for s in acfg["step_sizes"]]
    classifier = classifier.to(device).eval()
    clean_calls = calls(classifier, crops, bs, device)
    adversarial = {s: attack(classifier, crops, s, ev["pgd"], bs, device) for s in strengths}
    adv_calls = {s: calls(classifier, a, bs, device) for s, a in adversarial.items()}
    flipped = {s: (adv_calls[s] != clean_calls).numpy() for s in strengths}
    paths, damaged = list(crops.paths), (crops.labels == 1).numpy()
    masks = None if crops.masks is None else crops.masks.numpy()
    eps = ev["pgd"].get("eps")
    attack_note = (f"targeted PGD at the opposite class, {ev['pgd']['steps']} steps, eps "
                   f"{'steps x step size' if eps is None else eps}, against {model}; {len(crops)} of {len(test)} test crops "
                   f"({int(damaged.sum())} damaged; class-stratified, seed {seed})")
    rows = []

    def add(method, strength, metric, values, where, note_text):
        rows.extend({"model": model, "method": method, "strength": strength, "metric": metric, "condition": c, "value": float(v),
                     "note": note_text} for c, v in zip(where, values))

    for s in strengths:
        text = f"{DECISION}: {attack_note}{note}"
        add(DECISION, s, "flipped", flipped[s].astype(float), paths, text)
        add(DECISION, s, "flip_rate", [flipped[s].mean()], ["test"], text)
    keep = np.concatenate([np.flatnonzero((crops.labels == label).numpy())[:k] for label, k in EXAMPLES])
    examples = {"x": crops.images[keep].numpy(), "labels": crops.labels[keep].numpy(), "paths": np.array(paths)[keep],
                "model": np.array(model), "strengths": np.array(strengths), "pred": clean_calls[keep].numpy(),
                "methods": np.array([m.name for m in methods])}
    if masks is not None:
        examples["mask"] = masks[keep]
    for s in strengths:
        examples[f"x@{s:g}"] = (adversarial[s].images[keep] / 255).numpy().astype(np.float32)
        examples[f"pred@{s:g}"] = adv_calls[s][keep].numpy()
    for m in methods:
        form, t, chosen = val_choice(m, val_crops, cfg["quantiles"], acfg.get("quantile", 0.9))
        text = f"{m.name}: explains {m.explains}; {chosen}{m.extra}; {attack_note}{note}"
        clean = m.draw(crops, [form])[form]
        clean_b = binarize(clean, t)
        examples.update({m.name: clean[keep], f"{m.name}_threshold": np.array(t), f"{m.name}_form": np.array(form)})
        for s in strengths:
            adv = m.draw(adversarial[s], [form])[form]
            adv_b = binarize(adv, t)
            examples[f"{m.name}@{s:g}"] = adv[keep]
            moved = np.array([iou(a, b) for a, b in zip(clean_b, adv_b)])
            add(m.name, s, "map_iou", moved, paths, text)
            summary = {"map_iou": moved.mean(), "coverage_clean": clean_b.reshape(len(crops), -1).mean(),
                       "coverage_adv": adv_b.reshape(len(crops), -1).mean()}
            if flipped[s].any():
                summary["map_iou_flipped"] = moved[flipped[s]].mean()
            if masks is not None and damaged.any():
                for metric, b in (("mask_iou_clean", clean_b), ("mask_iou_adv", adv_b)):
                    per_crop = np.array([iou(p, q) for p, q in zip(b[damaged], masks[damaged])])
                    add(m.name, s, metric, per_crop, np.array(paths)[damaged], text)
                    summary[metric] = per_crop.mean()
            for metric, v in summary.items():
                add(m.name, s, metric, [v], ["test"], text)
    return rows, examples


def gan_methods(g, d, params: dict, device, noise: int) -> list[model_maps.MapMethod]:
    """G's counterfactual map, Grad-CAM of D and the Captum attributions of D, built as the saliency step builds them
    (evaluate/run.py's run_saliency: the same candidates)."""
    cfg, bs = params["evaluate"]["saliency"], params["evaluate"]["batch_size"]
    turns, sigma = cfg.get("turns", [1]), cfg["smooth_sigma"]
    candidates = [maps.candidate_name(f, k) for k in turns for f in cfg.get("counterfactual_forms", ["abs"])]
    return [model_maps.MapMethod("counterfactual", "G (against D)",
                                 lambda s, names: maps.counterfactual_candidates(g, s, bs, noise, device, sigma, names), candidates,
                                 extra=f"; maps blurred with a {sigma} px Gaussian" if sigma > 0 else ""),
            model_maps.model_method("gradcam", "D", lambda s, forms: {f: saliency.gradcam_maps(d, s, bs, device, f) for f in forms},
                                    cfg.get("gradcam_scalings", ["per_crop"]), turns),
            *model_maps.attribution_methods(d, "D", cfg, bs, device, params["seed"])]


def twin_methods(model, twin, params: dict, device) -> list[model_maps.MapMethod]:
    """Grad-CAM and the Captum attributions of the plain twin (`model`: one task's two logits of `twin`)."""
    cfg, bs = params["evaluate"]["saliency"], params["evaluate"]["batch_size"]
    return [model_maps.model_method("gradcam", "the plain twin", lambda s, forms: {
                f: saliency.gradcam_maps(model, s, bs, device, f, layers_of=twin) for f in forms},
                cfg.get("gradcam_scalings", ["per_crop"]), cfg.get("turns", [1])),
            *model_maps.attribution_methods(model, "the plain twin", cfg, bs, device, params["seed"])]


def posthoc_method(posthoc: Path, twin_checkpoint: Path, cx, params: dict) -> model_maps.MapMethod:
    """The post-hoc explainer of this twin (its Gs(x) - Ga(x) map, candidates as the saliency step's `posthoc` row);
    an explainer trained for another classifier is refused."""
    from ..models.external import sha256
    from ..train.common import load_checkpoint
    from ..train.posthoc import saliency_method
    ckpt = load_checkpoint(posthoc)
    if ckpt.get("kind") != "posthoc":
        raise UserError(f"--posthoc {posthoc}: a {ckpt.get('kind')!r} checkpoint, not a post-hoc explainer (cfgan train-posthoc)")
    record = ckpt.get("classifier", {})
    if record.get("kind") != "twin" or record.get("sha256") != sha256(twin_checkpoint):
        raise UserError(f"--posthoc {posthoc} explains {record.get('run', record.get('kind'))} ({record.get('file')}), not the "
                        f"twin {twin_checkpoint}: retrain it (cfgan train-posthoc --classifier {twin_checkpoint})")
    cfg = params["evaluate"]["saliency"]
    (name, make, names), _, note = saliency_method(ckpt, cx, cfg, params["evaluate"]["batch_size"])
    return model_maps.MapMethod(name, "the plain twin (post-hoc Gs, Ga)", make, list(names), extra=note)


def run_adversarial_maps(params, manifest: Path, checkpoint: Path, dataset: str, examples_out: Path,
                         posthoc: Path | None = None) -> pd.DataFrame:
    """The rows of one GAN run (D, its explainers and G's map) or one plain twin (and its post-hoc explainer), per
    task on multi-class data; Figure 6's examples into `examples_out` (keys tagged `__<class>` per defect class)."""
    cx = resolve(params)
    dev = cx.device
    g, d, ckpt = _load_any(checkpoint, cx)
    if ckpt["kind"] not in ("gan", "baseline"):
        raise UserError(f"{checkpoint}: a {ckpt['kind']!r} checkpoint; the adversarial maps explain a GAN run's D or a plain twin")
    if posthoc is not None and g is not None:
        raise UserError(f"--posthoc {posthoc}: a plain twin's explainer, but {checkpoint} is a GAN run")
    extra = [posthoc_method(posthoc, checkpoint, cx, params)] if posthoc is not None else []
    note = _run_note(ckpt, cx)
    frames, examples = [], {}
    for defect, run in tasks(manifest, ckpt["summary"]["run"]):
        if g is None:
            model = _twin_task(d, ckpt, run)
            classifier, name, methods = model, "twin", twin_methods(model, d, params, dev) + extra
        else:
            classifier, name, methods = RealLogits(d), "D", gan_methods(g, d, params, dev, noise_seed(ckpt, params))
        val, test = load_split(manifest, "val", defect=defect), load_split(manifest, "test", defect=defect)
        with cx.autocast():  # the maps themselves are computed in fp32 from the models' outputs
            rows, examples[defect] = movement(methods, classifier, name, val, test, params, dev, note)
        frame = pd.DataFrame.from_records(rows).assign(dataset=dataset, run=run)
        frames.append(frame[COLUMNS])
    save_examples(examples_out, examples)
    return pd.concat(frames, ignore_index=True)


def save_examples(path: Path, per_task: dict) -> None:
    """Figure 6's arrays of every task, keys tagged `__<class>` on multi-class data (`movement`'s examples)."""
    arrays = {}
    for defect, ex in per_task.items():
        tag = f"__{defect}" if defect else ""
        arrays.update({f"{k}{tag}": v for k, v in ex.items()})
    np.savez_compressed(path, **arrays)
