"""Choose training settings on val, never on test: train one run under several variants of the
params and print each variant's val figures (the checkpoint-selection metrics, the signs of
collapse, and the counterfactual maps' val IoU under the evaluation's own threshold rule, per map form). Where val
has masks, the training-free `local_contrast`'s val IoU (its polarity chosen on val) is printed first, once per task:
the reference every map screen is read against.

    python benchmarks/val_variants.py --params params.yaml workflow/profiles/tiny/params.yaml \
        --manifest data/processed/synthetic/manifest.csv --dataset synthetic --run cnn_unet-resnet3-c0-s0 \
        --variant default= --variant eval=train.d_in_g_update=eval --variant unbalanced=train.balance=false

A variant is `name=key=value[,key=value...]` (values parsed as YAML); `name=` is the params as
they are. `--smooth 0 1 2` also scores the maps blurred at those widths (no retraining); `--pgd 0.002` adds D's
val F1 under PGD (and `--twin CHECKPOINT` the plain twin's, once). Each variant's checkpoint goes to --out/<name>/. Only the train and val splits are read.
"""

from __future__ import annotations

import argparse
import re
import json
import time
from pathlib import Path

import numpy as np
import yaml

from cfgan.compute import resolve
from cfgan.config import deep_merge, load_params, run_defect, validate
from cfgan.data.datasets import load_split
from cfgan.evaluate import robustness, saliency
from cfgan.maps import COUNTERFACTUAL_FORMS, counterfactual_maps
from cfgan.metrics import choose_form
from cfgan.metrics import choose_threshold
from cfgan.steps import keys_for, select
from cfgan.train import gan
from cfgan.train.baselines import load_baseline


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, assignments = text.partition("=")
    override: dict = {}
    for item in filter(None, re.split(r",(?![^\[]*\])", assignments)):  # commas inside [...] belong to a list value
        key, _, value = item.partition("=")
        node = override
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return name, override


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", nargs="+", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--run", nargs="+", required=True, help="e.g. cnn_unet-resnet3-c1-s0 (several: each variant for each, e.g. three seeds)")
    ap.add_argument("--variant", action="append", required=True)
    ap.add_argument("--out", default="results/val_variants")
    ap.add_argument("--smooth", type=float, nargs="+", default=[0.0],
                    help="Gaussian blur widths (px) of |x - G(x)| to score on val (evaluate.saliency.smooth_sigma)")
    ap.add_argument("--fusion", action="store_true", help="also score each map form times local_contrast (evaluate.saliency.fusion)")
    ap.add_argument("--reuse", action="store_true", help="score the maps of variants already trained under --out instead of retraining them")
    ap.add_argument("--forms", nargs="+", default=["abs", "dark-decast"], choices=COUNTERFACTUAL_FORMS,
                    help="counterfactual map forms to score on val (evaluate.saliency.counterfactual_forms)")
    ap.add_argument("--pgd", type=float, nargs="+", default=[],
                    help="also D's val F1 under targeted PGD at these step sizes (evaluate.pgd's steps and eps, on "
                         "evaluate.robustness_crops class-stratified val crops, as the robustness step attacks test)")
    ap.add_argument("--twin", help="a plain twin's checkpoint (results/<dataset>/baselines/<run>/checkpoint.pt): its val F1 "
                                   "under the same --pgd attacks, printed once: the reference D is to beat")
    args = ap.parse_args(argv)
    base = load_params(args.params)
    tasks = {}  # defect class (None: binary) -> its val split, the attacked subset, local_contrast's maps

    def task(run: str) -> dict:
        """A run's own val task: a one-vs-rest run (`-k{class}`) reads only its class's crops and
        the undamaged ones, as training and the evaluation steps do."""
        defect = run_defect(run)
        if defect not in tasks:
            val = load_split(args.manifest, "val", defect=defect)
            tasks[defect] = {"val": val, "damaged": (val.labels == 1).numpy(),
                             "attacked": robustness.stratified_subset(val, base["evaluate"].get("robustness_crops"), base["seed"])}
            if val.masks is not None:  # the training-free reference every map screen is read against, printed once
                tasks[defect]["lc"] = reference_maps(val, tasks[defect]["damaged"], defect)
        return tasks[defect]

    def pgd_f1(classifier, cx, attacked) -> dict:
        f1 = robustness.f1_under_pgd(attacked, classifier, base["evaluate"]["pgd"], args.pgd, base["evaluate"]["batch_size"],
                                     base["seed"], cx.device)
        return {f"val_f1_{condition}": round(value, 3) for condition, value in f1.items()}

    quantiles = base["evaluate"]["saliency"]["quantiles"]

    def reference_maps(val, damaged, defect):
        """local_contrast's maps of the damaged val crops, its polarity chosen on val (printed once per task)."""
        lc_cfg = base["evaluate"]["saliency"]["local_contrast"]
        candidates = {p: saliency.local_contrast_maps(val.images[damaged], lc_cfg["sigma_narrow"], lc_cfg["sigma_wide"], p)
                      for p in saliency.POLARITIES}
        polarity = choose_form(candidates, val.masks.numpy()[damaged], quantiles)
        print(json.dumps({"variant": "local_contrast (no training)", **({"defect": defect} if defect else {}), "polarity": polarity,
                          "val_iou": round(choose_threshold(candidates[polarity], val.masks.numpy()[damaged], quantiles)[1], 3)}),
              flush=True)
        return candidates[polarity]

    if args.pgd and args.twin:
        cx = resolve(base)
        twin, _ = load_baseline(args.twin, cx)
        print(json.dumps({"variant": "plain twin (reference)", "checkpoint": args.twin,
                          **pgd_f1(twin, cx, task(args.run[0])["attacked"])}), flush=True)
    for run in args.run:
        own = task(run)
        val, damaged, lc = own["val"], own["damaged"], own.get("lc")
        for name, override in map(parse_variant, args.variant):
            params = validate(deep_merge(base, override), f"variant {name}")
            cx = resolve(params)
            t0 = time.time()
            out = Path(args.out) / name / run if len(args.run) > 1 else Path(args.out) / name
            if args.reuse and (out / "checkpoint.pt").is_file():  # re-score a finished variant's maps, no training
                summary = gan.load_gan(out / "checkpoint.pt")[2]["summary"]
            else:
                summary = gan.train_gan(select(params, keys_for("train", args.dataset)), Path(args.manifest), run, out, args.dataset)
            row = {"variant": name, "run": run, "precision": cx.precision, "seconds": round(time.time() - t0),
                   "selected_step": summary["best_step"], "collapse": summary["collapse"],
                   **{k: round(v, 3) for k, v in summary["val"].items()}}
            g, d, _ = gan.load_gan(out / "checkpoint.pt", cx)  # once, for the attacks and the maps
            if args.pgd:
                row.update(pgd_f1(robustness.RealLogits(d), cx, own["attacked"]))
            forms = [f for f in args.forms if not f.endswith("-keep") or getattr(g, "keep_mode", False)]  # -keep: keep-mode G only
            if val.masks is not None:
                for sigma in args.smooth:  # evaluate.saliency.smooth_sigma candidates: no retraining needed
                    with cx.autocast():  # at the variant's precision, as the saliency step would draw them
                        maps = counterfactual_maps(g, val, params["evaluate"]["batch_size"], params["seed"],
                                                            cx.device, sigma=sigma, forms=forms)
                    suffix = f"_smooth{sigma:g}" if sigma else ""
                    scores = {form: choose_threshold(m[damaged], val.masks.numpy()[damaged], quantiles)[1] for form, m in maps.items()}
                    for form, iou in scores.items():
                        row[f"val_iou_{form}{suffix}"] = round(iou, 3)
                    if args.fusion:  # evaluate.saliency.fusion: each form x local_contrast, a row of its own
                        for form, m in maps.items():
                            fused = np.clip(m[damaged], 0, None) * np.clip(lc, 0, None)
                            row[f"val_iou_fusion_{form}{suffix}"] = round(choose_threshold(fused, val.masks.numpy()[damaged], quantiles)[1], 3)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
