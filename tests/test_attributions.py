"""The model-agnostic attribution rows of Table 5 (Captum: occlusion, integrated gradients, KernelSHAP / LIME
over SLIC superpixels), the plain twin's saliency rows, the attribution subset every row is compared on, and
evaluate.saliency.turns as a candidate of every map a model draws (issue 47, items 3, 4 and 6)."""

import copy
import re

import numpy as np
import pytest
import torch
from torch import nn

from cfgan.data.datasets import Split
from cfgan.evaluate import attributions
from cfgan.evaluate.model_maps import model_method, score_methods
from cfgan.evaluate.references import attribution_subset

CAPTUM = ("occlusion", "integrated_gradients", "kernelshap_slic")
COST = re.compile(r"[0-9.e+-]+ s per crop \(measured on (\d+) test crops\)")


class Linear(nn.Module):
    """Two logits whose difference (damaged minus undamaged) is sum(w * x): a score linear in the pixels."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w, requires_grad=False)

    def forward(self, x):
        s = (x * self.w).flatten(1).sum(1)
        return torch.stack([-s / 2, s / 2], 1)


def _split(images, labels, masks=None):
    return Split(images, torch.as_tensor(labels), masks, [f"crop{i}" for i in range(len(images))])


def test_attributions_of_a_score_linear_in_the_pixels_are_input_times_weight():
    torch.manual_seed(0)
    w = torch.randn(1, 3, 8, 8)
    model = Linear(w)
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    split = _split(images, [1, 1, 0])
    x = images.float() / 255
    cfg = {"target": "margin", "baseline": "zero", "occlusion": {"window": 1, "stride": 1},
           "integrated_gradients": {"n_steps": 4}, "superpixels": {"n_segments": 4, "compactness": 10.0, "n_samples": 64}}
    per_pixel = (x * w).sum(1).numpy()   # each pixel's contribution to the score
    ig = attributions.attribution_maps(model, split, "integrated_gradients", ["positive", "abs"], cfg, 2)
    np.testing.assert_allclose(ig["abs"], np.abs(per_pixel), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ig["positive"], np.clip(per_pixel, 0, None), rtol=1e-4, atol=1e-5)
    raw = attributions.integrated_gradients(attributions.DamagedScore(model), x, torch.zeros_like(x), 4, 2)
    np.testing.assert_allclose(raw.numpy(), (x * w).numpy(), rtol=1e-4, atol=1e-5)   # per channel: input x weight
    base = attributions.baseline_of(x, "mean")                                         # from the crop's mean colour
    raw = attributions.integrated_gradients(attributions.DamagedScore(model), x, base, 4, 2)
    np.testing.assert_allclose(raw.numpy(), ((x - base) * w).numpy(), rtol=1e-4, atol=1e-5)
    occ = attributions.attribution_maps(model, split, "occlusion", ["abs"], cfg, 2)  # one pixel at a time, replaced by 0
    np.testing.assert_allclose(occ["abs"], np.abs(per_pixel), rtol=1e-4, atol=1e-5)
    # KernelSHAP over superpixels: each pixel carries its superpixel's Shapley value, for a linear score the sum
    # of its pixels' contributions
    shap = attributions.attribution_maps(model, split, "kernelshap_slic", ["abs"], cfg, 2)["abs"]
    for i in range(len(x)):
        segments = attributions.superpixels(x[i], 4, 10.0)[0, 0].numpy()
        for s in np.unique(segments):
            np.testing.assert_allclose(shap[i][segments == s], abs(per_pixel[i][segments == s].sum()), rtol=1e-3, atol=1e-4)
    damaged = attributions.DamagedScore(model, "damaged")(x)   # the damaged logit alone: half the margin here
    assert torch.allclose(damaged, attributions.DamagedScore(model)(x) / 2)
    with pytest.raises(ValueError, match="target"):
        attributions.DamagedScore(model, "fake")


def _crops(n=8, size=16, seed=0):
    """Crops with one dark diagonal crack each (the mask), away from the top rows."""
    rng = np.random.default_rng(seed)
    images = torch.full((n, 3, size, size), 180, dtype=torch.uint8)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        start = int(rng.integers(4, size - 6))
        for k in range(5):
            masks[i, start + k, 3 + k + i % 4] = True
    images[masks.unsqueeze(1).expand_as(images)] = 30
    return _split(images, [1] * n, masks)


def test_turns_are_chosen_on_val_per_row_and_the_note_says_which():
    """A map that paints a fixed place of the frame keeps one pass (turned, its paint spreads away from the
    masks); a map that follows the crack but carries a brighter frame artifact is cleaned by the turns."""
    val, test = _crops(seed=0), _crops(seed=1)
    frame_masks = torch.zeros_like(val.masks)
    frame_masks[:, :2] = True
    framed_val, framed_test = (Split(s.images, s.labels, frame_masks, s.paths) for s in (val, test))

    def painter(split, forms):   # the top two rows, whatever the crop shows
        m = np.zeros((len(split), 16, 16), np.float32)
        m[:, :2] = 1
        return {"map": m}

    def follower(split, forms):   # the crack (dark pixels) plus a brighter artifact on the top rows
        m = 1 - split.images.float().mean(1).numpy() / 255
        m[:, :2] += 1.0
        return {"map": m}

    cfg = {"quantiles": [0.5, 0.8, 0.9, 0.95, 0.97, 0.98], "turns": [1, 8]}
    ones = np.ones(len(val), bool)
    for method, (v, t), expected in ((model_method("painter", "a test model", painter, ["map"], [1, 8]), (framed_val, framed_test), 1),
                                     (model_method("follower", "a test model", follower, ["map"], [1, 8]), (val, test), 8)):
        rows, _, chosen = score_methods([method], v, t, ones, ones, cfg, 0, "")
        turns = [r for r in rows if r["metric"] == "turns"]
        assert [r["value"] for r in turns] == [expected], method.name
        assert chosen[method.name].form == ("map" if expected == 1 else "map+turns8")
        note = turns[0]["note"]
        assert f"turns {expected} chosen on val from [1, 8]" in note
        assert ("averaged over the crop's 8 flips and quarter turns" in note) == (expected == 8)
        assert COST.search(note)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny GAN run and its plain twin on a small generated data set (a few steps: the rows, not the scores)."""
    from conftest import crops_from
    from cfgan.config import load_params
    from cfgan.steps import keys_for, select
    from cfgan.train import gan
    from cfgan.train.baselines import train_baseline
    tmp = tmp_path_factory.mktemp("attributions")
    overlay = {"datasets": {"synthetic": {"source": {"kind": "synthetic", "n_sources": 20, "size": 64, "damaged_fraction": 0.7}}},
               "generator": {"cnn_unet": {"width": 8, "depth": 2}}, "discriminator": {"resnet3": {"width": 8}},
               "train": {"steps": 4, "batch_size": 8, "val_every": 2}, "baseline": {"steps": 4, "batch_size": 8},
               "evaluate": {"batch_size": 32}}
    files, manifest = crops_from(tmp, overlay)
    full = load_params(files)
    gan.train_gan(select(full, keys_for("train")), manifest, "cnn_unet-resnet3-c1-s0", tmp / "run")
    train_baseline(select(full, keys_for("train-baseline")), manifest, "resnet3", tmp / "twin", 0)
    params = select(full, keys_for("saliency"))
    params["evaluate"]["saliency"].update({"attribution_crops": 5, "turns": [1, 8]})
    params["evaluate"]["saliency"]["attributions"].update({
        "occlusion": {"window": 8, "stride": 8}, "integrated_gradients": {"n_steps": 4},
        "superpixels": {"n_segments": 8, "compactness": 10.0, "n_samples": 16}})
    return tmp, params, manifest


def test_captum_and_twin_rows_on_one_subset_with_their_model_turns_and_cost(trained):
    import pandas as pd
    from cfgan.data.datasets import load_split
    from cfgan.evaluate.references import run_saliency_references
    from cfgan.evaluate.run import run_saliency
    from cfgan.report.tables import table5_notes, table5_segmentation
    tmp, params, manifest = trained
    gan = run_saliency(params, manifest, tmp / "run/checkpoint.pt", "synthetic", tmp / "gan.npz")
    twin = run_saliency(params, manifest, tmp / "twin/checkpoint.pt", "synthetic", tmp / "twin.npz")
    refs = run_saliency_references(params, manifest, "synthetic", tmp / "refs.npz")
    sal = pd.concat([gan, twin, refs], ignore_index=True)
    assert set(twin["run"]) == {"baseline-resnet3-s0"} and set(twin["model"]) == {"gradcam", *CAPTUM}
    assert {"counterfactual", "gradcam", *CAPTUM} == set(gan["model"])
    # the Captum rows exist on the subset only; Grad-CAM and the counterfactual on every crop and on the subset
    for frame in (gan, twin):
        summary = frame[frame["metric"] == "iou_median"]
        for method in CAPTUM:
            assert set(summary.loc[summary["model"] == method, "condition"]) == {"test_subset"}
        assert set(summary.loc[summary["model"] == "gradcam", "condition"]) == {"test", "test_subset"}
    # one subset of crops for every row compared: the GAN's, the twin's and the references'
    test = load_split(manifest, "test")
    damaged = (test.labels == 1).numpy()
    expected = {f"subset:{test.paths[i]}" for i in attribution_subset(damaged, 5, params["seed"] + 1)}
    assert len(expected) == 5
    per_crop = sal[(sal["metric"] == "iou") & sal["condition"].str.startswith("subset:")]
    for (run, method), rows in per_crop.groupby(["run", "model"]):
        assert set(rows["condition"]) == expected, (run, method)
    assert len(per_crop.groupby(["run", "model"])) == 2 + 3 + 4 + 3   # G's and D's maps, the twin's, 3 references
    scores = sal[sal["metric"].isin(["iou", "f1_tol2", "iou_mean", "iou_median", "f1_tol2_mean", "pixel_auroc", "coverage"])]
    assert scores["value"].between(0, 1).all()
    # every model-drawn row: turns 1 or 8 chosen on val, said in its note, and its cost per crop with the number of crops
    turns = sal[sal["metric"] == "turns"]
    assert set(turns["value"]) <= {1.0, 8.0} and len(turns) == 2 + 2 + 3 + 2 + 3   # full and subset rows, Captum's subset only
    for r in turns.itertuples():
        assert f"turns {int(r.value)} chosen on val from [1, 8]" in r.note
    for r in sal[sal["model"].isin(CAPTUM) & (sal["metric"] == "iou_median")].itertuples():
        cost = COST.search(r.note)
        assert cost and int(cost.group(1)) == 5, r.note
        assert "on the attribution subset: " in r.note and "test damaged crops (evaluate.saliency.attribution_crops 5" in r.note
        assert ("of D's damaged-minus-undamaged logit" in r.note) == r.run.startswith("cnn_unet")
    # Table 5: each row names its method, whose maps they are and on which crops
    cls = pd.DataFrame([{"run": run, "model": model, "metric": m, "value": 0.5}
                        for run, model in (("cnn_unet-resnet3-c1-s0", "D"), ("baseline-resnet3-s0", "baseline")) for m in ("accuracy", "f1")])
    t5 = table5_segmentation(sal, cls)
    rows = set(zip(t5["saliency"], t5["explains"], t5["crops"]))
    for method in CAPTUM:
        assert {(method, "D", "subset"), (method, "twin", "subset")} <= rows
    assert {("gradcam", "D", "all"), ("gradcam", "twin", "all"), ("gradcam", "twin", "subset"), ("counterfactual", "G", "subset"),
            ("local_contrast", "none", "subset")} <= rows
    assert t5["iou_median"].between(0, 1).all() and set(t5["turns"].dropna()) <= {1.0, 8.0}
    assert (t5.loc[t5["explains"] == "twin", "f1"] == 0.5).all()   # the twin's own classification beside its maps
    notes = table5_notes(sal, t5)
    assert "s per crop (measured on 5 test crops)" in notes and "chosen on val from [1, 8]" in notes


def test_lime_is_a_row_of_its_own_and_unknown_methods_fail_clearly(trained):
    from cfgan.evaluate.run import run_saliency
    tmp, params, manifest = trained
    p = copy.deepcopy(params)
    p["evaluate"]["saliency"].update({"turns": [1], "gradcam_scalings": ["per_crop"]})
    p["evaluate"]["saliency"]["attributions"]["methods"] = ["lime_slic"]
    frame = run_saliency(p, manifest, tmp / "twin/checkpoint.pt", "synthetic", tmp / "lime.npz")
    assert set(frame["model"]) == {"gradcam", "lime_slic"}
    lime = frame[(frame["model"] == "lime_slic") & (frame["metric"] == "turns")]
    assert list(lime["value"]) == [1.0] and "flips and quarter turns" not in lime["note"].iloc[0]
    assert "chosen on val from [1" not in lime["note"].iloc[0]
    with pytest.raises(ValueError, match="attributions.methods"):
        attributions.attribution_maps(nn.Identity(), _crops(), "anchors", ["abs"], {}, 2)
