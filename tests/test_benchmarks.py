"""The benchmark scripts run (quick mode) and print their figures; targets are judged by people
reading benchmarks/README.md, not by timed tests."""

import subprocess
import sys

import pytest
import torch

from conftest import ROOT


@pytest.mark.slow
def test_perf_quick_mode_prints_every_section():
    proc = subprocess.run([sys.executable, "benchmarks/perf.py", "--quick"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for section in ("(1) fp32 matmul peak", "bf16 matmul peak", "(2) one adversarial training step", "(4) FID features", "FID of one run",
                    "PGD (10 steps)"):
        assert section in proc.stdout, proc.stdout
    assert "identical adversarials: True" in proc.stdout
    assert "max |difference| 0.00e+00" in proc.stdout  # the same features as pytorch-fid's own
    assert "glibc keeps freed memory: True" in proc.stdout or sys.platform != "linux"


def test_val_variants_trains_each_variant_and_prints_val_figures_only(small_manifest, tmp_path, capsys):
    import json
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import val_variants
    assert val_variants.parse_variant("fast=train.steps=4,train.balance=false") == (
        "fast", {"train": {"steps": 4, "balance": False}})
    assert val_variants.parse_variant("as-is=") == ("as-is", {})
    _, manifest = small_manifest
    overlay = tmp_path / "small.yaml"
    overlay.write_text("generator: {cnn_unet: {width: 8, depth: 2}}\ndiscriminator: {resnet3: {width: 8}}\n"
                       "train: {steps: 4, batch_size: 8, val_every: 2}\nevaluate: {batch_size: 32}\n")
    val_variants.main(["--params", str(ROOT / "params.yaml"), str(overlay), "--manifest", str(manifest),
                       "--dataset", "synthetic", "--run", "cnn_unet-resnet3-c0-s0", "--out", str(tmp_path / "v"),
                       "--variant", "a=", "--variant", "b=train.d_in_g_update=eval", "--smooth", "0", "1", "--fusion"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    reference, rows = lines[0], lines[1:]
    assert reference["variant"] == "local_contrast (no training)" and 0 <= reference["val_iou"] <= 1
    assert [r["variant"] for r in rows] == ["a", "b"]
    keys = [f"val_iou_{kind}{form}{smooth}" for kind in ("", "fusion_") for form in ("abs", "dark-decast") for smooth in ("", "_smooth1")]
    assert all(all(0 <= r[k] <= 1 for k in keys) and "val_score" in r and "test" not in json.dumps(r) for r in rows)
    assert (tmp_path / "v/b/checkpoint.pt").exists()
    # --reuse re-scores the trained variant without training it again (the checkpoint is left as it was)
    stamp = (tmp_path / "v/b/checkpoint.pt").stat().st_mtime_ns
    # (and --pgd adds D's val F1 under attack, --twin the plain twin's once, before the variants)
    from cfgan.config import load_params
    from cfgan.train.baselines import train_baseline
    small = load_params([ROOT / "params.yaml", overlay])
    train_baseline({**small, "baseline": {**small["baseline"], "steps": 2, "batch_size": 8}}, manifest, "resnet3", tmp_path / "twin")
    val_variants.main(["--params", str(ROOT / "params.yaml"), str(overlay), "--manifest", str(manifest),
                       "--dataset", "synthetic", "--run", "cnn_unet-resnet3-c0-s0", "--out", str(tmp_path / "v"),
                       "--variant", "b=train.d_in_g_update=eval", "--reuse", "--pgd", "0", "0.05", "--twin", str(tmp_path / "twin/checkpoint.pt")])
    again = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert again[0]["variant"] == "local_contrast (no training)"  # printed without --fusion too: every screen's reference
    twin, again = again[1], again[2:]
    assert again[0]["val_iou_abs"] == rows[1]["val_iou_abs"] and (tmp_path / "v/b/checkpoint.pt").stat().st_mtime_ns == stamp
    for row in (twin, again[0]):
        assert 0 <= row["val_f1_pgd=0.05"] <= row["val_f1_pgd=0.0"] + 0.5 and row["val_f1_pgd=0.0"] <= 1
    assert twin["variant"] == "plain twin (reference)" and abs(again[0]["val_f1_pgd=0.0"] - again[0]["val_f1_d"]) < 0.1  # unattacked: D's own val F1


def test_val_variants_reads_a_one_vs_rest_runs_own_task(tmp_path, capsys, monkeypatch):
    """A `-k{class}` run of a multi-class manifest is screened on its class's val crops and the
    undamaged ones, as it is trained and evaluated (not on every class's crops)."""
    import io
    import json
    import pandas as pd
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import val_variants
    from cfgan.data.crop import crop_split
    from cfgan.data.index import scan
    from cfgan.data.split import assign_splits
    from test_multiclass_data import CLASSES, _class_id_set
    layout = _class_id_set(tmp_path / "raw")
    split = assign_splits(scan(tmp_path / "raw", layout).frame, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=0)
    split = pd.read_csv(io.StringIO(split.to_csv(index=False)), keep_default_na=False)  # as the CLI reads it
    crop_split(split, tmp_path / "out", {"mode": "tile", "crop_size": 32, "stride": 32, "image_size": 32,
                                         "damaged_min_fraction": 0.01}, 0, CLASSES).to_csv(tmp_path / "out/manifest.csv", index=False)
    asked = []
    real_load = val_variants.load_split
    monkeypatch.setattr(val_variants, "load_split", lambda *a, **k: asked.append(k.get("defect")) or real_load(*a, **k))
    overlay = tmp_path / "small.yaml"
    overlay.write_text("generator: {cnn_unet: {width: 8, depth: 2}}\ndiscriminator: {resnet3: {width: 8}}\n"
                       "train: {steps: 2, batch_size: 8, val_every: 2}\nevaluate: {batch_size: 32}\n")
    val_variants.main(["--params", str(ROOT / "params.yaml"), str(overlay), "--manifest", str(tmp_path / "out/manifest.csv"),
                       "--dataset", "synthetic", "--run", "cnn_unet-resnet3-c0-kscratches-s0", "--out", str(tmp_path / "v"),
                       "--variant", "a="])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert asked == ["scratches"]
    assert lines[0]["variant"] == "local_contrast (no training)" and lines[0]["defect"] == "scratches"
    assert lines[1]["run"] == "cnn_unet-resnet3-c0-kscratches-s0" and 0 <= lines[1]["val_iou_abs"] <= 1


@pytest.mark.slow
def test_fault_campaign_quick_mode_survives_every_kill(fault_campaign):
    """Two SIGKILLs of Snakemake and one of dvc repro at seeded moments; every table as the
    uninterrupted run's (the session's shared tiny run, so CI runs the tiny profile once less)."""
    proc, _ = fault_campaign
    assert "faults survived: 3/3" in proc.stdout and "differences: none" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0


def test_tiny_wall_time_reads_each_rules_seconds_from_the_snakemake_log():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import tiny_wall_time
    log = """
[Tue Dec  1 12:00:00 2026]
rule train:
    output: a
    jobid: 3
    wildcards: run=x
[Tue Dec  1 12:00:00 2026]
rule train:
    jobid: 4
[Tue Dec  1 12:01:30 2026]
Finished jobid: 3 (Rule: train)
[Tue Dec  1 12:02:00 2026]
Finished jobid: 4 (Rule: train)
[Tue Dec  1 12:02:00 2026]
localrule all:
    jobid: 0
[Tue Dec  1 12:02:01 2026]
Finished jobid: 0 (Rule: all)
"""
    assert tiny_wall_time.rule_seconds(log) == {"train": (2, 210.0), "all": (1, 1.0)}


def test_val_curves_draws_the_curves_and_says_which_step_each_selection_rule_keeps(tmp_path, capsys):
    import pandas as pd
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import val_curves
    healthy = {"val_change": 0.03, "val_damaged_rate_d": 0.4, "val_damaged_rate_g": 0.3, "val_auc_fake": 0.7, "val_p_fake_real": 0.4}
    rows = [{"step": 1, "loss_d": 1.0},  # a training row without validation: not a point of the curve
            {"step": 2, **healthy, "val_score": 0.5, "val_map_iou": 0.30, "val_map_form": "dark"},
            {"step": 4, **healthy, "val_score": 0.7, "val_map_iou": 0.25, "val_map_form": "dark"},
            {"step": 6, **healthy, "val_change": 0.0, "val_score": 0.9, "val_map_iou": 0.40, "val_map_form": "abs"}]  # G the identity
    run = tmp_path / "v/run-s0"
    run.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(run / "log.csv", index=False)
    out = tmp_path / "fig/curves.png"
    val_curves.main(["--log", f"variant={tmp_path}/v/*/log.csv", "--reference", "local_contrast=0.3", "--out", str(out)])
    text = capsys.readouterr().out
    # a collapsed step is kept last by either rule, as in training
    assert "variant run-s0: val_score keeps step 4 (maps 0.250); select on maps keeps step 2 (maps 0.300)" in text
    # train.val_maps.tolerance: step 4's maps are within 0.06 of the best (0.30), and its val score is higher
    val_curves.main(["--log", f"variant={run}/log.csv", "--tolerance", "0.06", "--out", str(out)])
    assert "; with tolerance 0.06, step 4 (maps 0.250, score 0.700)" in capsys.readouterr().out
    val_curves.main(["--log", f"variant={run}/log.csv", "--tolerance", "0.04", "--out", str(out)])
    assert "; with tolerance 0.04, step 2 (maps 0.300, score 0.500)" in capsys.readouterr().out
    assert out.stat().st_size > 10_000 and not list(out.parent.glob("*.tmp.png"))
    pd.DataFrame(rows).drop(columns="val_map_iou").to_csv(run / "log.csv", index=False)
    with pytest.raises(SystemExit, match="train.val_maps"):
        val_curves.main(["--log", f"variant={run}/log.csv", "--out", str(out)])
    # train.val_pgd's curve alone (a data set without masks): drawn with a twin's line; no selection to replay
    pd.DataFrame(rows).drop(columns="val_map_iou").assign(**{"val_f1_d_pgd=0.002": [None, 0.61, 0.52, 0.43]}).to_csv(
        run / "log.csv", index=False)
    out.unlink()
    val_curves.main(["--log", f"variant={run}/log.csv", "--reference", "val_f1_d_pgd=0.002:twin=0.5", "--out", str(out)])
    text = capsys.readouterr().out
    assert "val_f1_d_pgd=0.002" in text and "0.52" in text and "keeps step" not in text and out.stat().st_size > 10_000
    with pytest.raises(SystemExit, match="no panel val_map_iou"):
        val_curves.main(["--log", f"variant={run}/log.csv", "--reference", "local_contrast=0.3", "--out", str(out)])


def test_val_curves_replays_old_logs_under_the_head_flag_with_d_balanced_accuracy_rebuilt(tmp_path, capsys):
    import pandas as pd
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import val_curves
    # val split: 10 crops, 4 damaged; D calls 4 damaged at F1 1.0 -> balanced accuracy 1.0
    pd.DataFrame({"split": ["val"] * 10 + ["train"], "label": [1] * 4 + [0] * 7}).to_csv(tmp_path / "manifest.csv", index=False)
    base = {"val_change": 0.03, "val_damaged_rate_d": 0.4, "val_damaged_rate_g": 0.3, "val_auc_fake": 0.7,
            "val_p_fake_real": 0.4, "val_f1_d": 1.0, "val_score": 0.6, "val_map_form": "dark"}
    rows = [{"step": 2, **base, "val_bacc_g": 0.55, "val_map_iou": 0.40},   # G's head broken, no other flag
            {"step": 4, **base, "val_bacc_g": 0.90, "val_map_iou": 0.35}]
    run = tmp_path / "v/run-s0"
    run.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(run / "log.csv", index=False)
    out = tmp_path / "curves.png"
    val_curves.main(["--log", f"v={run}/log.csv", "--out", str(out)])
    assert "select on maps keeps step 2 (maps 0.400)" in capsys.readouterr().out   # no verdict without D's accuracy
    val_curves.main(["--log", f"v={run}/log.csv", "--manifest", str(tmp_path / "manifest.csv"), "--out", str(out)])
    assert "select on maps keeps step 4 (maps 0.350)" in capsys.readouterr().out
    assert val_curves.with_bacc_d(pd.DataFrame(rows), str(tmp_path / "manifest.csv"))["val_bacc_d"].tolist() == [1.0, 1.0]


def test_diagnose_maps_prints_every_check_and_reads_the_evaluations_own_maps(small_manifest, tmp_path, capsys):
    """diagnose_maps.py on a trained checkpoint: one JSON line per check; the noise-draw and local-cast
    checks score the evaluation's own map forms (K = 1 and no local cast are the same maps), and a local
    cast leaves out the `-decast` forms it replaces."""
    import json
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import diagnose_maps
    from cfgan.train import gan
    params, manifest = small_manifest
    gan.train_gan(params, manifest, "cnn_unet-resnet3-c1-s0", tmp_path / "run")
    from cfgan.train.common import load_checkpoint, save_checkpoint
    ckpt = load_checkpoint(tmp_path / "run/checkpoint.pt")   # a few steps leave G near its zero-initialised output:
    ckpt["g"]["to_image.weight"] = 0.1 * torch.randn(ckpt["g"]["to_image.weight"].shape, generator=torch.Generator().manual_seed(0))
    save_checkpoint(tmp_path / "run/checkpoint.pt", ckpt)     # give it a change that bf16 rounds
    overlay = tmp_path / "forms.yaml"
    overlay.write_text("evaluate: {saliency: {counterfactual_forms: [abs, dark-decast], smooth_sigma: 1.0}}\n"
                       "compute: {precision: bf16}\n")   # (emulated where the CPU has no bf16: slower, same code path)
    diagnose_maps.main(["--params", str(ROOT / "params.yaml"), str(overlay), "--manifest", str(manifest),
                        str(tmp_path / "run/checkpoint.pt")])
    rows = {r["check"]: r for r in (json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{"))}
    assert set(rows) == {"shortcut", "dropout", "global_shift", "maps", "noise_draws", "local_cast", "dihedral", "precision"}
    draws, cast, turned = rows["noise_draws"], rows["local_cast"], rows["dihedral"]
    assert (turned["form_k1"], turned["iou_k1"]) == (draws["form_k1"], draws["iou_k1"])  # K = 1: the evaluation's own map
    assert all(0 <= turned[f"iou_k{k}"] <= 1 for k in diagnose_maps.DIHEDRAL_K)
    assert draws["change_between_draws"] >= 0
    assert all(0 <= draws[f"iou_k{k}"] <= 1 for k in diagnose_maps.NOISE_DRAWS)
    assert (draws["form_k1"], draws["iou_k1"]) == (cast["form_sigma0"], cast["iou_sigma0"])
    assert all(cast[f"form_sigma{s:g}"] == "abs" and 0 <= cast[f"iou_sigma{s:g}"] <= 1 for s in diagnose_maps.LOCAL_CAST_SIGMAS)
    precision = rows["precision"]   # the evaluation's maps (bf16 here), then the same draws from G in fp32
    assert precision["evaluated_at"] == "bf16"
    assert (precision["form_evaluated"], precision["iou_evaluated"]) == (draws["form_k1"], draws["iou_k1"])
    assert 0 < precision["change_between"] < 0.05    # fp32 really ran (bf16 rounds G's output), and only rounding differs
    assert 0 <= precision["iou_fp32"] <= 1


def test_the_race_line_is_alone_on_its_line_as_issue_22_reads_it():
    import re
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import perf
    pattern = r"^race (48px b32|224px b4): fp32 \d+\.\d{3} s/step, auto \d+\.\d{3} s/step, x\d+\.\d{2}$"
    line = perf.race_line("48px b32", 1.003, 0.472)
    assert re.match(pattern, line) and line.endswith("x2.12")
    assert re.match(pattern, perf.race_line("224px b4", 29.335, 13.308))
