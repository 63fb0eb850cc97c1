"""A generated three-class data set (class-id masks) through the tiny pipeline: one GAN per defect
class, per-class rows in every table, one block per class in figures 2 and 4. Slow (minutes)."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from cfgan.cli import main
from conftest import copy_workflow
from test_pipeline import ARTIFACTS, snakemake

CLASSES = {1: "spot", 2: "scratch", 3: "patch"}


def make_three_class_set(root, n=60, size=64, seed=0):
    """Grey textured plates, each with one defect in one random corner: a dark spot (1), a bright
    thin scratch (2) or a bright square patch (3); masks hold the class ids."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[0:size, 0:size]
    for k in range(n):
        img = np.clip(rng.normal(120, 12, (size, size)), 0, 255)
        ids = np.zeros((size, size), np.uint8)
        cls = 1 + k % 3
        oy, ox = rng.integers(0, 2, 2) * (size // 2)
        cy, cx = oy + rng.integers(8, 24), ox + rng.integers(8, 24)
        if cls == 1:
            region = (yy - cy) ** 2 + (xx - cx) ** 2 < 5 ** 2
            img[region] -= 70
        elif cls == 2:
            region = (np.abs((yy - cy) - (xx - cx)) <= 1) & (np.abs(yy - cy) < 9)
            img[region] += 80
        else:
            region = (np.abs(yy - cy) < 6) & (np.abs(xx - cx) < 6)
            img[region] += 40 + rng.normal(0, 10, region.sum())
        ids[region] = cls
        Image.fromarray(np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, 2)).save(root / "images" / f"{k:03d}.png")
        Image.fromarray(ids).save(root / "masks" / f"{k:03d}.png")


@pytest.mark.slow
def test_three_class_data_through_the_tiny_pipeline(tmp_path):
    (tmp_path / "work").mkdir()
    work = copy_workflow(tmp_path / "work")
    make_three_class_set(tmp_path / "plates")
    overlay = {
        "run_datasets": ["plates"],
        "datasets": {"plates": {
            "description": "generated plates with three defect types (class-id masks)",
            "source": {"kind": "local", "path": str(tmp_path / "plates"),
                       "layout": {"kind": "images_masks", "images": "images", "masks": "masks", "mask_classes": CLASSES}},
            "crop": {"mode": "tile", "crop_size": 32, "stride": 32, "image_size": 32, "damaged_min_fraction": 0.01}}},
        "grid": {"cycles": [1]},
        # 40 steps: nothing below asserts what the models learned (the per-class plumbing is the test),
        # and three one-vs-rest GANs at 100 steps made this the suite's dearest test after the tiny run
        "train": {"steps": 40, "val_every": 20},
        "baseline": {"steps": 40},
        "segmenter": {"steps": 40},
    }
    profile = work / "workflow/profiles/tiny"
    (profile / "plates.yaml").write_text(yaml.safe_dump(overlay))
    cfg_file = profile / "config.yaml"
    cfg = yaml.safe_load(cfg_file.read_text())
    cfg["configfile"] = list(cfg["configfile"]) + ["workflow/profiles/tiny/plates.yaml"]
    cfg_file.write_text(yaml.safe_dump(cfg))

    out = snakemake(work, "all")
    assert out.returncode == 0, out.stderr[-4000:]
    res = work / "results/plates/base"
    for artifact in ARTIFACTS:
        assert (res / artifact).is_file(), artifact
    runs = sorted(p.name for p in (res / "runs").iterdir())
    assert runs == [f"cnn_unet-resnet3-c1-k{name}-s0" for name in sorted(CLASSES.values())]

    manifest = pd.read_csv(work / "data/processed/plates/manifest.csv")
    assert set(manifest["defect_name"]) == {"undamaged", *CLASSES.values()}
    t2 = pd.read_csv(res / "tables/table2_classification.csv")
    assert set(t2["defect"]) == {*CLASSES.values(), "all"}
    assert (t2["n_seeds"] == 1).all()   # one seed; no two quantities share a row
    decisions = {"D (one-vs-rest)", "baseline (K+1 classes)"}
    for name in CLASSES.values():
        models = set(t2.loc[t2["defect"] == name, "model"])
        assert {"D", "G", "baseline", "all_damaged", "all_undamaged", *decisions} <= models, (name, models)
    overall = t2[t2["defect"] == "all"].set_index("model")["macro_f1"]  # the decisions over every class
    assert set(overall.index) == decisions and overall.between(0, 1).all()
    mc = pd.read_csv(res / "evaluations/multiclass/cnn_unet-resnet3-c1-s0.csv")
    assert {"pgd=0.01", "noise=0.2"} <= set(mc.loc[mc["metric"] == "macro_f1", "condition"])
    t5 = pd.read_csv(res / "tables/table5_segmentation.csv")
    for name in CLASSES.values():
        methods = set(t5.loc[t5["defect"] == name, "saliency"])
        assert {"counterfactual", "gradcam", "segmenter", "local_contrast", "random", "all_pixels"} <= methods
    # a class's map is scored against that class's mask pixels only: the random map's IoU sits at
    # the class's own pixel rate, which differs between a thin scratch and a square patch
    rand = t5[(t5["saliency"] == "random") & (t5["crops"] == "all")].set_index("defect")["iou_median"]
    assert rand["scratch"] < rand["patch"]
    assert set(t5["defect"]) == set(CLASSES.values())
    for table in ("table1_fid", "table3_fid_subsets", "table4_fakeness_correlation"):
        assert set(pd.read_csv(res / f"tables/{table}.csv")["defect"]) == set(CLASSES.values()), table

    # cfgan explain on the multi-class run: the configuration's name finds its three one-vs-rest runs
    image = tmp_path / "plates/images/002.png"
    out = tmp_path / "explained"
    assert main(["explain", "--run", str(res / "runs/cnn_unet-resnet3-c1-s0"), str(image), "--out", str(out)]) == 0
    record = json.loads((out / "002.json").read_text())
    assert record["prediction"] in {"undamaged", *CLASSES.values()}
    assert set(record["classes"]) == set(CLASSES.values())
    for name, c in record["classes"].items():
        assert (out / f"002_{name}_counterfactual.png").is_file() and (out / f"002_{name}_saliency.png").is_file()
        assert 0 <= c["p_damaged"] <= 1 and 0 <= c["p_fake"] <= 1
