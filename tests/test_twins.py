"""The classifiers D and G's head are compared with (issue 46, items 2 and 5): the plain twin trains on
the GAN's batches (relabelled where the augmentation cut the defect away), and the non-adversarial
UNet classifier (G's architecture, its head alone) is trained, evaluated and reported beside them."""

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import ROOT, save_image, save_mask

# a window of 20 % of the crop's side, no turns or flips: a defect in one corner of the crop is
# out of view in all but ~0.6 % of the draws
NARROW = {"scale": [0.04, 0.04], "rotation": 0, "rot90": False, "hflip": False, "vflip": False,
          "brightness": 0.0, "hue": 0.0, "blur_p": 0.0}


def _corner_manifest(root, n_train=8, n_val=2, size=32):
    """Damaged crops whose defect is a 2 x 2 px blob in the top-left corner; undamaged crops with empty masks."""
    rows = []
    for split, n in (("train", n_train), ("val", n_val)):
        for label in (0, 1):
            for i in range(n):
                name = f"{split}_{label}_{i}"
                save_image(root / "crops" / f"{name}.png", (size, size), seed=len(rows))
                mask = np.zeros((size, size), bool)
                if label:
                    mask[:2, :2] = True
                save_mask(root / "masks" / f"{name}.png", mask)
                rows.append({"path": f"crops/{name}.png", "label": label, "mask_path": f"masks/{name}.png",
                             "source_id": name, "split": split})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def _tiny(steps=5, **extra):
    from cfgan.config import deep_merge, load_params
    params = load_params([ROOT / "params.yaml", ROOT / "workflow/profiles/tiny/params.yaml"])
    return deep_merge(params, {"compute": {"device": "cpu", "precision": "fp32"}, "discriminator": {"resnet3": {"width": 8}},
                               "generator": {"cnn_unet": {"width": 8, "depth": 2}},
                               "train": {"augment": NARROW, "val_every": steps},
                               "baseline": {"steps": steps, "batch_size": 16, "balance": True}, **extra})


def test_the_twin_relabels_a_crop_whose_defect_the_augmentation_cut_away(tmp_path, monkeypatch):
    """Old behaviour: the twin augmented without masks and kept label 1 for every damaged crop, so about
    half of its (balanced) targets were 1 although the defect was out of view in nearly all of them."""
    import torch.nn.functional as F
    from cfgan.train.baselines import train_baseline
    manifest = _corner_manifest(tmp_path)
    targets, ce = [], F.cross_entropy

    def spy(logits, y, *args, **kwargs):
        targets.append(y.detach().cpu())
        return ce(logits, y, *args, **kwargs)

    monkeypatch.setattr(F, "cross_entropy", spy)
    train_baseline(_tiny(), manifest, "resnet3", tmp_path / "twin")
    seen = torch.cat(targets)
    assert len(seen) == 5 * 16
    assert int(seen.sum()) <= 2, f"{int(seen.sum())} of {len(seen)} targets still damaged: the twin kept the old labels"


def test_the_shared_batch_builder_relabels_class_ids_too():
    """The twin's targets on a multi-class data set are class ids: a crop that lost its defect is class 0."""
    from cfgan.data.datasets import Split
    from cfgan.train.batches import draw_batch, training_batch
    n = 6
    masks = torch.zeros(n, 32, 32, dtype=torch.bool)
    masks[:, :2, :2] = True  # every crop damaged, its defect in the corner
    split = Split(torch.randint(0, 255, (n, 3, 32, 32), dtype=torch.uint8), torch.ones(n, dtype=torch.long), masks,
                  [str(i) for i in range(n)], torch.full((n,), 2))
    _, y = training_batch(split, torch.arange(n), {"augment": NARROW}, torch.Generator().manual_seed(0), "cpu", split.classes)
    assert y.tolist() == [0] * n
    full = {**NARROW, "scale": [1.0, 1.0]}  # no crop: every defect stays, and keeps its class id
    _, y = draw_batch(split, 8, True, {"augment": full}, torch.Generator().manual_seed(0), "cpu", split.classes)
    assert y.tolist() == [2] * 8


@pytest.fixture
def unet_params(small_manifest, tmp_path):
    """Params files for a few-step UNet classifier on the small synthetic manifest."""
    _, manifest = small_manifest
    short = tmp_path / "short.yaml"
    short.write_text(yaml.safe_dump({"baseline": {"steps": 4, "batch_size": 8},
                                     "compute": {"device": "cpu", "precision": "fp32"},
                                     "evaluate": {"pgd": {"step_sizes": [0.0, 0.01]}, "noise": {"stds": [0.0, 0.1]}}}))
    return [str(ROOT / "params.yaml"), str(tmp_path / "overlay.yaml"), str(short)], manifest


def test_the_unet_classifier_trains_on_its_head_and_is_evaluated_and_reported(unet_params, tmp_path):
    """Old behaviour: no such step; table 2 and figure 3 had no non-adversarial UNet rows."""
    from cfgan.cli import main
    from cfgan.report import tables
    from cfgan.train.common import load_checkpoint
    from cfgan.train.unet_classifier import load_unet_classifier
    files, manifest = unet_params
    out = tmp_path / "unet_classifiers/cnn_unet-s1"
    assert main(["train-unet-classifier", "--params", *files, "--manifest", str(manifest), "--generator", "cnn_unet",
                 "--seed", "1", "--out", str(out)]) == 0
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["kind"] == "unet_classifier" and ckpt["summary"]["run"] == "unet_classifier-cnn_unet-s1"
    assert len(pd.read_csv(out / "log.csv")) == 4
    model, _ = load_unet_classifier(ckpt)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (3, 2) and torch.equal(model(x), model(x))  # z fixed by the run's seed: one function
    for step in ("classify", "robustness"):
        csv = tmp_path / f"{step}.csv"
        assert main([step, "--params", *files, "--manifest", str(manifest), "--checkpoint", str(out / "checkpoint.pt"),
                     "--dataset", "synthetic", "--out", str(csv)]) == 0
        rows = pd.read_csv(csv)
        assert set(rows["model"]) == {"unet classifier (non-adversarial)"} and set(rows["run"]) == {"unet_classifier-cnn_unet-s1"}
    rob = pd.read_csv(tmp_path / "robustness.csv")
    assert {"pgd=0.01", "noise=0.1"} <= set(rob["condition"])
    t2 = tables.table2_classification(pd.read_csv(tmp_path / "classify.csv"))
    assert t2[["config", "model"]].values.tolist() == [["unet_classifier-cnn_unet", "unet classifier (non-adversarial)"]]


def test_both_front_doors_train_and_evaluate_the_unet_classifiers():
    import subprocess
    import sys
    from cfgan.dvc_pipeline import build
    files = ["params.yaml", "workflow/profiles/tiny/params.yaml"]
    stages = build(files, None)["stages"]
    train = stages["train_unet_classifier_synthetic"]
    assert train["matrix"] == {"generator": ["cnn_unet"], "seed": [0]} and "cfgan train-unet-classifier" in train["cmd"]
    assert train["outs"][0] == "results/synthetic/base/unet_classifiers/${item.generator}-s${item.seed}/checkpoint.pt"
    for step, folder in (("classify", "classification"), ("robustness", "robustness")):
        assert f"{folder}/unet_classifier-${{item.generator}}-s${{item.seed}}.csv" in stages[f"{step}_unet_classifier_synthetic"]["outs"][0]
        assert f"results/synthetic/base/evaluations/{folder}/unet_classifier-cnn_unet-s0.csv" in stages["report_synthetic"]["deps"]
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "workflow/profiles/tiny", "-n", "-p", "--forceall", "all"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "cfgan train-unet-classifier" in proc.stdout and "--out results/synthetic/base/unet_classifiers/cnn_unet-s0" in proc.stdout
    for folder in ("classification", "robustness"):
        assert f"--out results/synthetic/base/evaluations/{folder}/unet_classifier-cnn_unet-s0.csv" in proc.stdout
