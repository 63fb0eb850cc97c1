"""Adversarial samples explained (issue 47, item 5; evaluate/adversarial_maps.py): each explainer's map of test crops and
of their targeted PGD adversarials, for a GAN run's D (and G's map) and for its plain twin (and its post-hoc
explainer), the same crops for both; Table 6 and Figure 6; the pipeline's plan (rule, DVC stages, params keys)."""

import re

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from cfgan.data.datasets import Split
from cfgan.attacks import stratified_subset
from cfgan.evaluate.adversarial_maps import COLUMNS, calls, movement
from cfgan.evaluate.model_maps import MapMethod
from conftest import ROOT, crops_from

SCORES = ("map_iou", "map_iou_flipped", "mask_iou_clean", "mask_iou_adv", "coverage_clean", "coverage_adv", "flip_rate", "flipped")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny GAN run, its plain twin and the twin's post-hoc explainer on a small generated data set (a few steps:
    the rows, not the scores), and the step's params at smoke-test sizes."""
    from cfgan.config import load_params
    from cfgan.steps import keys_for, select
    from cfgan.train import gan
    from cfgan.train.baselines import train_baseline
    from cfgan.train.posthoc import train_posthoc
    tmp = tmp_path_factory.mktemp("adversarial_maps")
    overlay = {"datasets": {"synthetic": {"source": {"kind": "synthetic", "n_sources": 20, "size": 64, "damaged_fraction": 0.7}}},
               "generator": {"noise_dim": 8, "cnn_unet": {"width": 8, "depth": 2}}, "discriminator": {"resnet3": {"width": 8}},
               "train": {"steps": 4, "batch_size": 8, "val_every": 2}, "baseline": {"steps": 4, "batch_size": 8},
               "posthoc": {"steps": 2, "batch_size": 8}, "compute": {"device": "cpu", "precision": "fp32"},
               "evaluate": {"batch_size": 32, "adversarial_maps": {"crops": 6, "step_sizes": [0.01, 0.03]},
                            "saliency": {"attribution_crops": 4, "attributions": {
                                "methods": ["occlusion", "integrated_gradients", "kernelshap_slic"],
                                "occlusion": {"window": 8, "stride": 8}, "integrated_gradients": {"n_steps": 4},
                                "superpixels": {"n_segments": 8, "compactness": 10.0, "n_samples": 16}}}}}
    files, manifest = crops_from(tmp, overlay)
    full = load_params(files)
    gan.train_gan(select(full, keys_for("train")), manifest, "cnn_unet-resnet3-c1-s0", tmp / "run")
    train_baseline(select(full, keys_for("train-baseline")), manifest, "resnet3", tmp / "twin", 0)
    train_posthoc(select(full, keys_for("train-posthoc")), manifest, tmp / "posthoc", 0, tmp / "twin/checkpoint.pt")
    return tmp, files, manifest


def test_rows_for_d_and_twin_on_the_same_crops_with_values_in_0_1(trained):
    from cfgan.cli import main
    tmp, files, manifest = trained
    common = ["--params", *files, "--manifest", str(manifest), "--dataset", "synthetic"]
    assert main(["adversarial-maps", *common, "--checkpoint", str(tmp / "run/checkpoint.pt"), "--out", str(tmp / "gan.csv"),
                 "--examples", str(tmp / "gan.npz")]) == 0
    assert main(["adversarial-maps", *common, "--checkpoint", str(tmp / "twin/checkpoint.pt"), "--posthoc",
                 str(tmp / "posthoc/checkpoint.pt"), "--out", str(tmp / "twin.csv"), "--examples", str(tmp / "twin.npz")]) == 0
    gan, twin = (pd.read_csv(tmp / f, keep_default_na=False, na_values=[""]) for f in ("gan.csv", "twin.csv"))
    assert list(gan.columns) == COLUMNS == list(twin.columns)
    assert set(gan["model"]) == {"D"} and set(twin["model"]) == {"twin"}
    captum = {"occlusion", "integrated_gradients", "kernelshap_slic"}
    assert set(gan["method"]) == {"decision", "counterfactual", "gradcam", *captum}
    assert set(twin["method"]) == {"decision", "posthoc", "gradcam", *captum}
    for frame in (gan, twin):
        assert set(frame["strength"]) == {0.01, 0.03}
        assert set(frame["metric"]) <= set(SCORES) and {"map_iou", "mask_iou_clean", "mask_iou_adv", "flip_rate"} <= set(frame["metric"])
        assert frame["value"].between(0, 1).all(), frame[~frame["value"].between(0, 1)]
        assert frame["note"].str.contains("targeted PGD at the opposite class").all()
    # the same crops, attacked and explained, for D and for the twin
    per_crop = {name: f[(f["metric"] == "map_iou") & (f["condition"] != "test")] for name, f in (("D", gan), ("twin", twin))}
    crops = {name: set(f["condition"]) for name, f in per_crop.items()}
    assert crops["D"] == crops["twin"] and len(crops["D"]) == 6
    assert set(gan.loc[gan["metric"] == "flipped", "condition"]) == crops["D"]
    with np.load(tmp / "gan.npz") as d_ex, np.load(tmp / "twin.npz") as t_ex:
        assert list(d_ex["paths"]) == list(t_ex["paths"]) and np.array_equal(d_ex["x"], t_ex["x"])
        assert {"counterfactual", "counterfactual@0.03", "counterfactual_threshold", "x@0.01", "pred@0.03"} <= set(d_ex.files)
        assert {"posthoc", "posthoc@0.01", "gradcam@0.03"} <= set(t_ex.files)
    # the thresholds are chosen on val as the saliency step chooses them
    assert gan.loc[gan["method"] == "gradcam", "note"].str.contains(r"chosen on \d+ val damaged crops, the saliency step's rule").all()


def test_a_post_hoc_explainer_is_refused_beside_a_gan_run(trained, capsys):
    from cfgan.cli import main
    tmp, files, manifest = trained
    assert main(["adversarial-maps", "--params", *files, "--manifest", str(manifest), "--dataset", "synthetic", "--checkpoint",
                 str(tmp / "run/checkpoint.pt"), "--posthoc", str(tmp / "posthoc/checkpoint.pt"), "--out", str(tmp / "x.csv"),
                 "--examples", str(tmp / "x.npz")]) == 2
    assert "a plain twin's explainer" in capsys.readouterr().err and not (tmp / "x.csv").exists()


class Linear(nn.Module):
    """Two logits whose difference is sum(w * x): PGD moves every pixel."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w, requires_grad=False)

    def forward(self, x):
        s = (x * self.w).flatten(1).sum(1)
        return torch.stack([-s / 2, s / 2], 1)


def _split(n=8, size=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    labels = torch.tensor([i % 2 for i in range(n)])
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    masks[labels == 1, 2:5, 2:5] = True
    return Split(images, labels, masks, [f"crop{seed}-{i}" for i in range(n)])


def test_a_map_that_cannot_change_does_not_move_and_one_that_follows_the_pixels_does():
    torch.manual_seed(0)
    classifier = Linear(torch.randn(1, 3, 8, 8))
    constant = MapMethod("constant", "nothing", lambda s, names: {n: np.tile(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8),
                                                                            (len(s), 1, 1)) for n in names}, ["map"])
    follower = MapMethod("follower", "the pixels", lambda s, names: {n: np.stack([s.batch(torch.tensor([i]))[0][0].mean(0).numpy()
                                                                               for i in range(len(s))]) for n in names}, ["map"])
    params = {"seed": 0, "evaluate": {"batch_size": 4, "pgd": {"steps": 10, "eps": None},
                                      "adversarial_maps": {"crops": 6, "step_sizes": [0.05]},
                                      "saliency": {"quantiles": [0.5, 0.8, 0.9], "attribution_crops": None}}}
    test = _split(seed=2)
    rows, examples = movement([constant, follower], classifier, "toy", _split(seed=1), test, params, "cpu")
    frame = pd.DataFrame(rows)
    moved = frame[(frame["metric"] == "map_iou") & (frame["condition"] != "test")]
    assert len(moved) == 2 * 6 and (moved.loc[moved["method"] == "constant", "value"] == 1).all()
    assert moved.loc[moved["method"] == "follower", "value"].mean() < 1   # a map drawn from the pixels moves with them
    # a strong attack on a linear score reaches its target, the opposite of the label: the calls that were right flip
    crops = stratified_subset(test, 6, 0)
    right = (calls(classifier, crops, 4, "cpu") == crops.labels).numpy().astype(float)
    flips = frame[(frame["method"] == "decision") & (frame["metric"] == "flipped")]
    assert list(flips["condition"]) == crops.paths and list(flips["value"]) == list(right)
    assert frame["value"].between(0, 1).all()
    assert examples["x@0.05"].dtype == np.float32 and len(examples["x"]) == 3   # 2 damaged and 1 undamaged crop
    # without masks: the map movement still, each threshold a fixed quantile of the val maps, no mask IoU
    unmasked = [Split(s.images, s.labels, None, s.paths) for s in (_split(seed=1), test)]
    rows, examples = movement([constant, follower], classifier, "toy", *unmasked, params, "cpu")
    frame = pd.DataFrame(rows)
    assert not frame["metric"].str.startswith("mask_iou").any() and "mask" not in examples
    assert (frame.loc[(frame["method"] == "constant") & (frame["metric"] == "map_iou"), "value"] == 1).all()
    assert frame.loc[frame["method"] == "follower", "note"].str.contains("no masks: form 'map', threshold .* the 0.9 quantile").all()


def test_table6_and_figure6_from_the_steps_rows(trained, tmp_path):
    from cfgan.report import figures
    from cfgan.report.build import _all_examples
    from cfgan.report.tables import table6_adversarial_maps
    tmp, _, _ = trained
    if not (tmp / "gan.csv").exists():
        pytest.skip("needs the rows of test_rows_for_d_and_twin_on_the_same_crops_with_values_in_0_1")
    adv = pd.concat([pd.read_csv(tmp / f, keep_default_na=False, na_values=[""]) for f in ("gan.csv", "twin.csv")], ignore_index=True)
    t6 = table6_adversarial_maps(adv)
    assert list(t6.columns[:5]) == ["method", "strength", "model", "config", "explains"]
    assert {"map_iou", "map_iou_sd", "flip_rate", "mask_iou_clean", "mask_iou_adv", "coverage_clean", "n_seeds"} <= set(t6.columns)
    assert set(zip(t6["method"], t6["model"])) >= {("gradcam", "D"), ("gradcam", "twin"), ("counterfactual", "D"), ("posthoc", "twin")}
    assert set(t6.loc[t6["method"] == "counterfactual", "explains"]) == {"G"} and (t6["n_seeds"] == 1).all()
    assert t6["map_iou"].between(0, 1).all() and t6["flip_rate"].between(0, 1).all()
    panels = [(who, _all_examples(tmp / f, None)) for who, f in (("D", "gan.npz"), ("twin", "twin.npz"))]
    figures.fig6_adversarial_maps(panels, tmp_path / "fig6.png", "test")
    assert (tmp_path / "fig6.png").stat().st_size > 0


def test_one_step_per_gan_run_and_twin_in_both_front_doors(tiny_params):
    from cfgan.dvc_pipeline import build
    from cfgan.steps import keys_for
    stages = build([str(ROOT / "params.yaml"), str(ROOT / "workflow/profiles/tiny/params.yaml")], None)["stages"]
    gan, twin = stages["adversarial_maps_synthetic"], stages["adversarial_maps_baseline_synthetic"]
    assert gan["matrix"]["run"] and "--posthoc" not in gan["cmd"]
    assert "--posthoc results/synthetic/base/posthoc/${item.backbone}-s${item.seed}/checkpoint.pt" in twin["cmd"]
    assert "evaluate.adversarial_maps" in twin["params"] and "evaluate.pgd" in twin["params"]
    # the attack block as the tiny file sets it too, so DVC reruns the step when that file changes the attack
    assert "evaluate.pgd" in next(iter(next(p for p in twin["params"] if isinstance(p, dict)).values()))
    report = stages["report_synthetic"]["deps"]
    assert "results/synthetic/base/evaluations/adversarial_maps/baseline-resnet3-s0.csv" in report
    assert "evaluate.pgd" in keys_for("adversarial-maps")   # the attack block, as the robustness step reads it
    rules = (ROOT / "workflow/rules/evaluate.smk").read_text()
    assert re.search(r"^rule adversarial_maps:", rules, re.M)
