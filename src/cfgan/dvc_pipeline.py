"""Write dvc.yaml for a configuration: the same steps, commands, inputs, outputs and params keys
as the Snakemake rules, with the run grid as a DVC matrix.

`cfgan dvc-yaml --params params.yaml --out dvc.yaml` makes the paper's; the tiny profile's lives
in workflow/profiles/tiny/dvc.yaml (`dvc repro workflow/profiles/tiny/dvc.yaml`). Regenerate
after changing the grid or the data sets; tests check the committed files are current.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .code_deps import dvc_deps
from .config import (BASE_EXPERIMENT, baseline_runs, deep_merge, experiment_of, grid_runs, grid_seeds, multiclass_runs, read_yaml,
                     results_dir, segmenter_runs, unet_classifier_runs)
from .config import posthoc_runs
from .steps import has_key, has_masks, key_spec, keys_for, present_keys


def _params_section(step: str, files: list[str], base: dict, merged: dict, overlays: list[dict], dataset: str | None = None) -> list:
    """params.yaml keys as a plain list; an overlay's keys under its file name, where it sets them
    (an optional key only where some file holds it)."""
    keys = keys_for(step, dataset)
    required = {key for key, optional, _ in map(key_spec, keys) if not optional}
    # a required key goes under params.yaml only where no overlay holds it instead (a data set a user's own
    # file declares: DVC refuses a stage whose params.yaml lacks a key it lists there)
    out: list = [k for k in present_keys(merged, keys)
                 if has_key(base, k) or (k in required and not any(has_key(o, k) for o in overlays))]
    for name, overlay in zip(files[1:], overlays):
        present = [k for k in present_keys(merged, keys) if has_key(overlay, k)]
        if present:
            out.append({name: present})
    return out


def build(files: list[str], wdir: str | None) -> dict:
    merged: dict = {}
    base = read_yaml(files[0])
    overlays = [read_yaml(f) for f in files[1:]]
    for f in files:
        merged = deep_merge(merged, read_yaml(f))
    P = " ".join(files)
    # the data steps get the files without an experiment's overlay, as in the Snakemake rules
    PD = " ".join(f for f, data in zip(files, [base, *overlays]) if experiment_of(data) == BASE_EXPERIMENT)
    backbones = merged["grid"]["discriminators"]
    seeds = grid_seeds(merged)
    stages: dict = {}

    def stage(name, cmd, deps, outs, step, dataset=None, matrix=None, extra=None):
        s = {}
        if matrix:
            s["matrix"] = matrix
        s["cmd"] = cmd
        if wdir:
            s["wdir"] = wdir
        s["deps"] = deps + dvc_deps(step)  # the code this step imports, not all of src/
        params_used = _params_section(step, files, base, merged, overlays, dataset)
        if params_used:  # the trivial classifiers read no params at all
            s["params"] = params_used
        s["outs"] = outs
        s.update(extra or {})
        stages[name] = s

    for ds in merged["run_datasets"]:
        runs = grid_runs(merged, ds)  # one GAN per defect class on a multi-class data set
        kind = merged["datasets"][ds]["source"]["kind"]
        raw = f"data/raw/{ds}"
        acquire = {"synthetic": "synthetic", "download": "download", "local": "ingest"}[kind]
        stage(f"{acquire}_{ds}", f"cfgan {acquire} --params {PD} --dataset {ds} --out {raw}", [],
              [raw] if kind == "synthetic" else [f"{raw}/index.csv"], acquire, ds)
        stage(f"split_{ds}", f"cfgan split --params {PD} --index {raw}/index.csv --out data/interim/{ds}/split.csv",
              [f"{raw}/index.csv"], [f"data/interim/{ds}/split.csv"], "split")
        manifest = f"data/processed/{ds}/manifest.csv"
        stage(f"crop_{ds}", f"cfgan crop --params {PD} --dataset {ds} --split-index data/interim/{ds}/split.csv "
              f"--out data/processed/{ds}", [f"data/interim/{ds}/split.csv"], [f"data/processed/{ds}"], "crop", ds)
        r = results_dir(merged, ds)
        run_dir = f"{r}/runs/${{item.run}}"
        stage(f"train_{ds}", f"cfgan train --params {P} --manifest {manifest} --dataset {ds} --run ${{item.run}} --out {run_dir}",
              [f"data/processed/{ds}"], [{f"{run_dir}/checkpoint.pt": {"persist": True}}, f"{run_dir}/log.csv"],
              "train", ds, matrix={"run": runs})
        base_dir = f"{r}/baselines/${{item.backbone}}-s${{item.seed}}"
        stage(f"train_baseline_{ds}", f"cfgan train-baseline --params {P} --manifest {manifest} --backbone ${{item.backbone}} "
              f"--seed ${{item.seed}} --out {base_dir}", [f"data/processed/{ds}"], [f"{base_dir}/checkpoint.pt", f"{base_dir}/log.csv"],
              "train-baseline", matrix={"backbone": backbones, "seed": seeds})
        generators = merged["grid"]["generators"]
        unet_dir = f"{r}/unet_classifiers/${{item.generator}}-s${{item.seed}}"
        stage(f"train_unet_classifier_{ds}", f"cfgan train-unet-classifier --params {P} --manifest {manifest} "
              f"--generator ${{item.generator}} --seed ${{item.seed}} --out {unet_dir}", [f"data/processed/{ds}"],
              [f"{unet_dir}/checkpoint.pt", f"{unet_dir}/log.csv"], "train-unet-classifier",
              matrix={"generator": generators, "seed": seeds})
        ev = f"{r}/evaluations"
        ckpt_gan = f"{r}/runs/${{item.run}}/checkpoint.pt"
        common = f"--params {P} --manifest {manifest} --dataset {ds}"
        real = f"{ev}/fid_real.npz"
        stage(f"fid_real_{ds}", f"cfgan fid-real --params {P} --manifest {manifest} --out {real}",
              [f"data/processed/{ds}"], [real], "fid-real")
        stage(f"fid_{ds}", f"cfgan fid {common} --checkpoint {ckpt_gan} --real-features {real} --out {ev}/fid/${{item.run}}.csv "
              f"--examples {ev}/examples/${{item.run}}_counterfactuals.npz", [f"data/processed/{ds}", ckpt_gan, real],
              [f"{ev}/fid/${{item.run}}.csv", f"{ev}/examples/${{item.run}}_counterfactuals.npz"], "fid", matrix={"run": runs})
        stage(f"uncertainty_{ds}", f"cfgan uncertainty {common} --checkpoint {ckpt_gan} --out {ev}/uncertainty/${{item.run}}.csv",
              [f"data/processed/{ds}", ckpt_gan], [f"{ev}/uncertainty/${{item.run}}.csv"], "uncertainty", matrix={"run": runs})
        for step, kind_dir in (("classify", "classification"), ("robustness", "robustness")):
            stage(f"{step}_{ds}", f"cfgan {step} {common} --checkpoint {ckpt_gan} --out {ev}/{kind_dir}/${{item.run}}.csv",
                  [f"data/processed/{ds}", ckpt_gan], [f"{ev}/{kind_dir}/${{item.run}}.csv"], step, matrix={"run": runs})
            ckpt_base = f"{r}/baselines/${{item.backbone}}-s${{item.seed}}/checkpoint.pt"
            stage(f"{step}_baseline_{ds}", f"cfgan {step} {common} --checkpoint {ckpt_base} "
                  f"--out {ev}/{kind_dir}/baseline-${{item.backbone}}-s${{item.seed}}.csv", [f"data/processed/{ds}", ckpt_base],
                  [f"{ev}/{kind_dir}/baseline-${{item.backbone}}-s${{item.seed}}.csv"], step,
                  matrix={"backbone": backbones, "seed": seeds})
            ckpt_unet = f"{unet_dir}/checkpoint.pt"
            stage(f"{step}_unet_classifier_{ds}", f"cfgan {step} {common} --checkpoint {ckpt_unet} "
                  f"--out {ev}/{kind_dir}/unet_classifier-${{item.generator}}-s${{item.seed}}.csv", [f"data/processed/{ds}", ckpt_unet],
                  [f"{ev}/{kind_dir}/unet_classifier-${{item.generator}}-s${{item.seed}}.csv"], step,
                  matrix={"generator": generators, "seed": seeds})
        stage(f"classify_references_{ds}", f"cfgan classify-references {common} --out {ev}/classification/references.csv",
              [f"data/processed/{ds}"], [f"{ev}/classification/references.csv"], "classify-references")
        for run, members in multiclass_runs(merged, ds).items():  # multi-class data: the decision from K GANs or the twin
            ckpts = [f"{r}/baselines/{m.removeprefix('baseline-')}/checkpoint.pt" if m.startswith("baseline-")
                     else f"{r}/runs/{m}/checkpoint.pt" for m in members]
            stage(f"multiclass_{ds}_{run}", f"cfgan multiclass {common} --checkpoints {' '.join(ckpts)} "
                  f"--out {ev}/multiclass/{run}.csv", [f"data/processed/{ds}", *ckpts], [f"{ev}/multiclass/{run}.csv"], "multiclass")
        report_deps = [f"{ev}/{k}/{run}.csv" for k in ("fid", "uncertainty", "classification", "robustness") for run in runs]
        report_deps += [f"{ev}/multiclass/{run}.csv" for run in multiclass_runs(merged, ds)]
        report_deps += [f"{ev}/{k}/{b}.csv" for k in ("classification", "robustness")
                        for b in baseline_runs(merged) + unet_classifier_runs(merged)]
        report_deps += [f"{ev}/classification/references.csv"]
        report_deps += [f"{ev}/examples/{run}_counterfactuals.npz" for run in runs]
        # each explainer's map of test crops and of their PGD adversarials (table 6, figure 6): per GAN run and per
        # twin, with the twin's post-hoc explainer where one is trained; every data set
        adv, twin_dir = f"{ev}/adversarial_maps", f"{r}/baselines/${{item.backbone}}-s${{item.seed}}"
        stage(f"adversarial_maps_{ds}", f"cfgan adversarial-maps {common} --checkpoint {ckpt_gan} --out {adv}/${{item.run}}.csv "
              f"--examples {ev}/examples/${{item.run}}_adversarial_maps.npz", [f"data/processed/{ds}", ckpt_gan],
              [f"{adv}/${{item.run}}.csv", f"{ev}/examples/${{item.run}}_adversarial_maps.npz"], "adversarial-maps", matrix={"run": runs})
        explainer = ([f"{r}/posthoc/${{item.backbone}}-s${{item.seed}}/checkpoint.pt"]
                     if has_masks(merged["datasets"][ds]) and posthoc_runs(merged) else [])
        twin_run = "baseline-${item.backbone}-s${item.seed}"
        stage(f"adversarial_maps_baseline_{ds}", f"cfgan adversarial-maps {common} --checkpoint {twin_dir}/checkpoint.pt "
              + "".join(f"--posthoc {p} " for p in explainer)
              + f"--out {adv}/{twin_run}.csv --examples {ev}/examples/{twin_run}_adversarial_maps.npz",
              [f"data/processed/{ds}", f"{twin_dir}/checkpoint.pt", *explainer],
              [f"{adv}/{twin_run}.csv", f"{ev}/examples/{twin_run}_adversarial_maps.npz"], "adversarial-maps",
              matrix={"backbone": backbones, "seed": seeds})
        report_deps += [f"{ev}/{k}/{run}{ext}" for run in runs + baseline_runs(merged)
                        for k, ext in (("adversarial_maps", ".csv"), ("examples", "_adversarial_maps.npz"))]
        if has_masks(merged["datasets"][ds]):
            archs = merged["segmenter"]["architectures"]
            seg_dir = f"{r}/segmenters/${{item.arch}}-s${{item.seed}}"
            seg_run = "segmenter-${item.arch}-s${item.seed}"
            if archs:
                stage(f"train_segmenter_{ds}", f"cfgan train-segmenter --params {P} --manifest {manifest} --arch ${{item.arch}} "
                      f"--seed ${{item.seed}} --out {seg_dir}", [f"data/processed/{ds}"], [f"{seg_dir}/checkpoint.pt", f"{seg_dir}/log.csv"],
                      "train-segmenter", matrix={"arch": archs, "seed": seeds})
                stage(f"saliency_segmenter_{ds}", f"cfgan saliency {common} --checkpoint {seg_dir}/checkpoint.pt "
                      f"--out {ev}/saliency/{seg_run}.csv --examples {ev}/examples/{seg_run}_saliency.npz",
                      [f"data/processed/{ds}", f"{seg_dir}/checkpoint.pt"],
                      [f"{ev}/saliency/{seg_run}.csv", f"{ev}/examples/{seg_run}_saliency.npz"],
                      "saliency", matrix={"arch": archs, "seed": seeds})
                report_deps += [f"{ev}/saliency/{a}.csv" for a in segmenter_runs(merged)]
                report_deps += [f"{ev}/examples/{a}_saliency.npz" for a in segmenter_runs(merged)]
            stage(f"saliency_references_{ds}", f"cfgan saliency-references {common} --out {ev}/saliency/references.csv "
                  f"--examples {ev}/examples/references_saliency.npz", [f"data/processed/{ds}"],
                  [f"{ev}/saliency/references.csv", f"{ev}/examples/references_saliency.npz"], "saliency-references")
            report_deps += [f"{ev}/saliency/references.csv", f"{ev}/examples/references_saliency.npz"]
            if posthoc_runs(merged):  # Charachon et al.'s explainer of each plain twin, scored like every map
                post_dir, post_run = f"{r}/posthoc/${{item.backbone}}-s${{item.seed}}", "posthoc-${item.backbone}-s${item.seed}"
                twin = f"{r}/baselines/${{item.backbone}}-s${{item.seed}}/checkpoint.pt"
                stage(f"train_posthoc_{ds}", f"cfgan train-posthoc --params {P} --manifest {manifest} --classifier {twin} "
                      f"--seed ${{item.seed}} --out {post_dir}", [f"data/processed/{ds}", twin],
                      [f"{post_dir}/checkpoint.pt", f"{post_dir}/log.csv"], "train-posthoc", matrix={"backbone": backbones, "seed": seeds})
                stage(f"saliency_posthoc_{ds}", f"cfgan saliency {common} --checkpoint {post_dir}/checkpoint.pt "
                      f"--out {ev}/saliency/{post_run}.csv --examples {ev}/examples/{post_run}_saliency.npz",
                      [f"data/processed/{ds}", f"{post_dir}/checkpoint.pt"],
                      [f"{ev}/saliency/{post_run}.csv", f"{ev}/examples/{post_run}_saliency.npz"],
                      "saliency", matrix={"backbone": backbones, "seed": seeds})
                report_deps += [f"{ev}/saliency/{p}.csv" for p in posthoc_runs(merged)]
                report_deps += [f"{ev}/examples/{p}_saliency.npz" for p in posthoc_runs(merged)]
            stage(f"saliency_{ds}", f"cfgan saliency {common} --checkpoint {ckpt_gan} --out {ev}/saliency/${{item.run}}.csv "
                  f"--examples {ev}/examples/${{item.run}}_saliency.npz", [f"data/processed/{ds}", ckpt_gan],
                  [f"{ev}/saliency/${{item.run}}.csv", f"{ev}/examples/${{item.run}}_saliency.npz"], "saliency",
                  matrix={"run": runs})
            report_deps += [f"{ev}/saliency/{run}.csv" for run in runs] + [f"{ev}/examples/{run}_saliency.npz" for run in runs]
            twin_ckpt, twin_run = f"{r}/baselines/${{item.backbone}}-s${{item.seed}}/checkpoint.pt", "baseline-${item.backbone}-s${item.seed}"
            stage(f"saliency_baseline_{ds}", f"cfgan saliency {common} --checkpoint {twin_ckpt} --out {ev}/saliency/{twin_run}.csv "
                  f"--examples {ev}/examples/{twin_run}_saliency.npz", [f"data/processed/{ds}", twin_ckpt],
                  [f"{ev}/saliency/{twin_run}.csv", f"{ev}/examples/{twin_run}_saliency.npz"], "saliency",
                  matrix={"backbone": backbones, "seed": seeds})  # the plain twins' Grad-CAM and attribution rows
            report_deps += [f"{ev}/{k}/{b}{ext}" for b in baseline_runs(merged) for k, ext in (("saliency", ".csv"), ("examples", "_saliency.npz"))]
        stage(f"report_{ds}", f"cfgan report --params {P} --evaluations {ev} --out {r}", report_deps,
              [f"{r}/tables", f"{r}/figures"], "report",
              extra={"metrics": [{f"{r}/metrics.json": {"cache": False}}],
                     "plots": [{f"{r}/plots/pgd.csv": {"cache": False, "x": "strength"}},
                               {f"{r}/plots/noise.csv": {"cache": False, "x": "strength"}}]})
    return {"stages": stages}


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


def write(files: list[str], out: Path) -> None:
    from .io import write_text
    wdir = os.path.relpath(".", out.parent) if out.parent.resolve() != Path(".").resolve() else None
    header = ("# Generated by `cfgan dvc-yaml --params " + " ".join(files) + f" --out {out}`: do not edit by hand.\n"
              "# The same steps as the Snakemake rules (workflow/rules/*.smk), with the run grid as a DVC matrix.\n")
    write_text(out, header + yaml.dump(build(files, wdir), Dumper=_NoAliases, sort_keys=False, width=200))
