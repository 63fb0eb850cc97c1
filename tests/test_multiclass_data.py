"""Several defect classes in the data steps: class-id masks, class folders, file-name prefixes;
a binary data set keeps exactly its old index and manifest."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cfgan.cli import main
from cfgan.data.classes import MIXED, defect_classes, tile_class
from cfgan.data.crop import MANIFEST_COLUMNS, crop_split
from cfgan.data.images import read_mask
from cfgan.data.index import scan
from cfgan.data.split import assign_splits
from cfgan.errors import UserError
from conftest import need_shared, save_image

CLASSES = {1: "inclusion", 2: "patches", 3: "scratches"}


def _class_id_set(root, n=12, size=96):
    """n images of 3x3 tiles of 32 px: (0, 1) holds class 1, (0, 2) class 2, (1, 0) class 3, (1, 1) classes
    1 and 2 (dropped), the other five no defect."""
    for k in range(n):
        save_image(root / "images" / f"{k:03d}.png", (size, size), seed=k)
        ids = np.zeros((size, size), np.uint8)
        ids[4:12, 36:60] = 1
        ids[8:24, 70:78] = 2
        ids[40:48, 8:24] = 3
        ids[36:44, 36:44] = 1
        ids[52:60, 52:60] = 2
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(ids).save(root / "masks" / f"{k:03d}.png")
    return {"kind": "images_masks", "images": "images", "masks": "masks", "mask_classes": CLASSES}


def test_class_names_from_each_layout_kind():
    assert defect_classes({"kind": "images_masks", "mask_classes": {"2": "patches", 1: "inclusion"}}) == \
        {1: "inclusion", 2: "patches"}
    assert defect_classes({"kind": "class_folders", "classes": {"healthy": 0, "bruise": 1, "scab": 2}}) == \
        {1: "bruise", 2: "scab"}
    assert defect_classes({"kind": "class_folders", "classes": {"healthy": 0, "defective": 1},
                           "class_prefixes": {"bruise_": 1, "scab_": 2}}) == {1: "bruise", 2: "scab"}
    assert defect_classes({"kind": "class_folders", "classes": {"healthy": 0, "defective": 1}}) == {1: "damaged"}
    assert defect_classes({"kind": "images_masks"}) == {1: "damaged"}
    with pytest.raises(UserError, match="Inclusion"):
        defect_classes({"mask_classes": {1: "Inclusion", 2: "b"}})
    with pytest.raises(UserError, match="start at 1"):
        defect_classes({"mask_classes": {0: "background", 2: "b"}})


def test_tile_class_rule():
    t = np.zeros((10, 10), np.uint8)
    assert tile_class(t, [1, 2], 0.01) == 0
    t[0, :5] = 2
    assert tile_class(t, [1, 2], 0.01) == 2
    assert tile_class(t, [1, 2], 0.1) is None          # a sliver of class 2: skipped
    t[5, :5] = 1
    assert tile_class(t, [1, 2], 0.01) == MIXED         # two classes, each over the threshold
    assert tile_class(t, [1, 2], 0.06) is None


def test_class_id_masks_through_index_split_crop(tmp_path):
    layout = _class_id_set(tmp_path / "raw")
    result = scan(tmp_path / "raw", layout)
    index = result.frame
    assert "defect_class" in index.columns and set(index["defect_class"]) == {""}  # the masks decide per tile
    assert index["label"].eq(1).all()
    assert any("defect classes (mask pixels)" in n for n in result.notes)
    split = assign_splits(index, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=0)
    manifest = crop_split(split, tmp_path / "out", {"mode": "tile", "crop_size": 32, "stride": 32, "image_size": 32,
                                                      "damaged_min_fraction": 0.01}, 0, CLASSES)
    assert list(manifest.columns) == MANIFEST_COLUMNS + ["defect_class", "defect_name"]
    assert dict(zip(manifest["defect_class"], manifest["defect_name"])) == {0: "undamaged", **CLASSES}
    assert (manifest["label"] == (manifest["defect_class"] > 0)).all()
    assert len(manifest) == 12 * 8   # tile (1, 1) of every image holds two classes: dropped
    for split_name in ("train", "val", "test"):
        assert set(manifest.loc[manifest["split"] == split_name, "defect_class"]) == {0, 1, 2, 3}
    # a crop's mask holds its own class's pixels only (binary): the class-1 pixels of tile (1, 0)
    for row in manifest[manifest["label"] == 1].itertuples():
        mask = read_mask(tmp_path / "out" / row.mask_path)
        assert 0 < mask.mean() < 0.2


def test_undeclared_mask_id_is_named(tmp_path):
    layout = _class_id_set(tmp_path / "raw", n=3)
    ids = np.zeros((96, 96), np.uint8)
    ids[:4, :4] = 7
    Image.fromarray(ids).save(tmp_path / "raw/masks/001.png")
    with pytest.raises(UserError, match=r"001\.png: value\(s\) 7 not declared in layout\.mask_classes"):
        scan(tmp_path / "raw", layout)


def test_undeclared_mask_id_exits_nonzero_without_output(tmp_path, write_params):
    _class_id_set(tmp_path / "raw", n=3)
    Image.fromarray(np.full((96, 96), 9, np.uint8)).save(tmp_path / "raw/masks/002.png")
    params = write_params({"datasets": {"steel": {
        "source": {"kind": "local", "path": str(tmp_path / "raw"),
                   "layout": {"kind": "images_masks", "images": "images", "masks": "masks", "mask_classes": CLASSES}},
        "crop": {"mode": "tile", "crop_size": 32, "image_size": 32}}}})
    out = tmp_path / "interim"
    code = main(["ingest", "--params", *map(str, params), "--dataset", "steel", "--out", str(out)])
    assert code != 0 and not (out / "index.csv").exists()


def _apples(root, with_stray=False):
    for k in range(6):
        save_image(root / "healthy" / f"h_{k}.png", seed=k)
        save_image(root / "defective" / f"bruise_{k}.png", seed=10 + k)
        save_image(root / "defective" / f"scab_{k}.png", seed=20 + k)
    if with_stray:
        save_image(root / "defective" / "rot_1.png", seed=99)
    return {"kind": "class_folders", "classes": {"healthy": 0, "defective": 1}, "class_prefixes": {"bruise": 1, "scab": 2}}


def test_prefixes_give_classes_and_crop_keeps_them(tmp_path):
    layout = _apples(tmp_path / "raw")
    index = scan(tmp_path / "raw", layout).frame
    by_name = dict(zip(index["path"].map(lambda p: p.rsplit("/", 1)[1]), index["defect_class"]))
    assert by_name["h_0.png"] == 0 and by_name["bruise_3.png"] == 1 and by_name["scab_5.png"] == 2
    assert set(index["label"]) == {0, 1}
    split = assign_splits(index, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=0)
    split = pd.read_csv(pd.io.common.StringIO(split.to_csv(index=False)), keep_default_na=False)  # as the CLI reads it
    manifest = crop_split(split, tmp_path / "out", {"mode": "resize", "image_size": 16}, 0)
    assert sorted(set(manifest["defect_class"])) == [0, 1, 2]
    assert dict(zip(manifest["defect_class"], manifest["defect_name"])) == {0: "undamaged", 1: "bruise", 2: "scab"}
    assert (manifest["label"] == (manifest["defect_class"] > 0)).all()


def test_file_without_a_declared_prefix_is_named(tmp_path):
    layout = _apples(tmp_path / "raw", with_stray=True)
    with pytest.raises(UserError, match=r"rot_1\.png: its name starts with none of layout\.class_prefixes"):
        scan(tmp_path / "raw", layout)


def test_class_folders_with_ids(tmp_path):
    for name in ("healthy", "bruise", "scab"):
        for k in range(3):
            save_image(tmp_path / name / f"{k}.png", seed=k)
    index = scan(tmp_path, {"kind": "class_folders", "classes": {"healthy": 0, "bruise": 1, "scab": 2}}).frame
    assert index.groupby("defect_class").size().to_dict() == {0: 3, 1: 3, 2: 3}
    assert index.groupby("label").size().to_dict() == {0: 3, 1: 6}


def test_a_class_missing_from_a_split_is_named(tmp_path):
    layout = _class_id_set(tmp_path / "raw", n=4)
    index = scan(tmp_path / "raw", layout).frame
    split = assign_splits(index, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=0)
    with pytest.raises(UserError, match=r"holds no crop of defect class\(es\) \[4\]"):
        crop_split(split, tmp_path / "out", {"mode": "tile", "crop_size": 32, "image_size": 32,
                                             "damaged_min_fraction": 0.01}, 0, {**CLASSES, 4: "rust"})


def test_binary_data_sets_keep_their_columns(tmp_path):
    for name in ("ok", "bad"):
        for k in range(4):
            save_image(tmp_path / "raw" / name / f"{k}.png", seed=k)
    index = scan(tmp_path / "raw", {"kind": "class_folders", "classes": {"ok": 0, "bad": 1}}).frame
    assert "defect_class" not in index.columns
    split = assign_splits(index, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=0)
    manifest = crop_split(split, tmp_path / "out", {"mode": "resize", "image_size": 16}, 0)
    assert list(manifest.columns) == MANIFEST_COLUMNS


def test_neu_seg_masks_read_as_class_ids(tmp_path):
    """Real steel photos: NEU-Seg's masks hold ids 1-3; 64 px tiles get one class each or are dropped."""
    neu = need_shared("neu-seg")
    names = sorted((neu / "masks/training").iterdir())[::90][:40]  # spread: the files are grouped by class
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    for m in names:
        (tmp_path / "masks" / m.name).symlink_to(m)
        (tmp_path / "images" / (m.stem + ".jpg")).symlink_to(neu / "images/training" / (m.stem + ".jpg"))
    layout = {"kind": "images_masks", "images": "images", "masks": "masks", "mask_classes": CLASSES}
    index = scan(tmp_path, layout).frame
    assert len(index) == 40
    split = assign_splits(index, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    manifest = crop_split(split, tmp_path / "out", {"mode": "tile", "crop_size": 64, "stride": 64, "image_size": 64,
                                                      "damaged_min_fraction": 0.01}, 0, CLASSES)
    counts = manifest.groupby("defect_class").size()
    assert set(counts.index) == {0, 1, 2, 3} and (counts > 0).all()


# --- run names, the grid and the multi-class decision -----------------------------------------

def test_one_gan_per_defect_class_in_the_grid(tiny_params):
    from cfgan.config import grid_runs, multiclass_runs, parse_run_name, run_defect, split_seed
    params = {**tiny_params, "run_datasets": ["synthetic", "steel"], "grid": {**tiny_params["grid"], "cycles": [1]}}
    params["datasets"] = {**params["datasets"], "steel": {
        "source": {"kind": "local", "path": "x", "layout": {"kind": "images_masks", "mask_classes": {1: "spot", 2: "scratch"}}},
        "crop": {"mode": "tile", "image_size": 32}}}
    assert grid_runs(params, "synthetic") == ["cnn_unet-resnet3-c1-s0"]
    assert grid_runs(params, "steel") == ["cnn_unet-resnet3-c1-kspot-s0", "cnn_unet-resnet3-c1-kscratch-s0"]
    assert parse_run_name("cnn_unet-resnet3-c1-kspot-s0") == ("cnn_unet", "resnet3", 1, 0)
    assert run_defect("cnn_unet-resnet3-c1-kspot-s0") == "spot" and run_defect("cnn_unet-resnet3-c1-s0") is None
    assert split_seed("cnn_unet-resnet3-c1-kspot-s0") == ("cnn_unet-resnet3-c1-kspot", 0)
    assert multiclass_runs(params, "synthetic") == {}
    assert multiclass_runs(params, "steel") == {
        "cnn_unet-resnet3-c1-s0": ["cnn_unet-resnet3-c1-kspot-s0", "cnn_unet-resnet3-c1-kscratch-s0"],
        "baseline-resnet3-s0": ["baseline-resnet3-s0"]}


def test_macro_f1_counts_every_class():
    from cfgan.metrics import multiclass_metrics
    m = multiclass_metrics([0, 0, 1, 2, 2], [0, 0, 1, 2, 0], 3)
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["f1_1"] == 1.0 and m["f1_2"] == pytest.approx(2 / 3) and m["f1_0"] == pytest.approx(0.8)
    assert m["macro_f1"] == pytest.approx((0.8 + 1 + 2 / 3) / 3)
    assert multiclass_metrics([1, 1], [0, 0], 3)["macro_f1"] == 0.0   # a collapsed decision scores 0


def test_one_vs_rest_decision_rule():
    """The most confident D wins when its log-odds (damaged : undamaged) are above 0; none: undamaged."""
    import torch
    from cfgan.evaluate.multiclass import OneVsRest

    class Fixed(torch.nn.Module):
        def __init__(self, rows):
            super().__init__()
            self.rows = torch.tensor(rows, dtype=torch.float)

        def forward(self, x):
            return self.rows  # logits: real-undamaged, real-damaged, fake

    d1 = Fixed([[0, 2, 5], [0, -1, 0], [0, 1, 0]])
    d2 = Fixed([[0, 1, 0], [0, -3, 0], [0, 3, 0]])
    pred = OneVsRest([d1, d2])(torch.zeros(3, 3, 8, 8)).argmax(1)
    assert pred.tolist() == [1, 0, 2]   # the fake logit is left out of the decision


def _manifest_of(tmp_path, rows):
    """A manifest of 8 px crops: rows of (source_id, split, label, defect_name)."""
    ids = {"undamaged": 0, **{v: k for k, v in CLASSES.items()}}
    records = []
    for i, (source, split, label, name) in enumerate(rows):
        save_image(tmp_path / "crops" / f"{i}.png", (8, 8), seed=i)
        records.append({"path": f"crops/{i}.png", "label": label, "mask_path": "", "source_id": source,
                        "split": split, "defect_class": ids[name], "defect_name": name})
    path = tmp_path / "manifest.csv"
    pd.DataFrame.from_records(records).to_csv(path, index=False)
    return path


def test_same_photos_negatives_keep_only_undamaged_crops_of_the_tasks_photos(tmp_path, capsys):
    from cfgan.data.datasets import load_split
    manifest = _manifest_of(tmp_path, [
        ("a", "train", 1, "inclusion"), ("a", "train", 0, "undamaged"), ("a", "train", 0, "undamaged"),
        ("b", "train", 1, "patches"), ("b", "train", 0, "undamaged"),
        ("c", "train", 0, "undamaged"),
        ("d", "val", 1, "inclusion"), ("e", "val", 0, "undamaged")])
    everything = load_split(manifest, "train", defect="inclusion")
    assert everything.labels.tolist() == [1, 0, 0, 0, 0]      # the task: inclusion against every undamaged crop
    matched = load_split(manifest, "train", defect="inclusion", negatives="same_photos")
    assert matched.paths == ["crops/0.png", "crops/1.png", "crops/2.png"]   # photo a only
    assert "2 of 4 undamaged train crops (inclusion)" in capsys.readouterr().out
    assert load_split(manifest, "train", defect="patches", negatives="same_photos").paths == \
        ["crops/3.png", "crops/4.png"]
    with pytest.raises(UserError, match="leaves no undamaged crop in split 'val' for inclusion"):
        load_split(manifest, "val", defect="inclusion", negatives="same_photos")
    with pytest.raises(UserError, match="train.negatives: 'some'"):
        load_split(manifest, "train", negatives="some")


def test_an_undamaged_tile_of_a_class_id_mask_gets_an_empty_mask_not_every_pixel():
    """A class-id mask's background is 0: the undamaged tile's binary mask was `m == 0`, every pixel
    damaged, so the supervised segmenters learnt 'all damage' from every undamaged crop."""
    import numpy as np
    from cfgan.data.crop import _crop_label
    background = np.zeros((8, 8), dtype=np.uint8)
    label, defect, mask = _crop_label(background, 1, 1, 0.01, [1, 2, 3], tiled=True)
    assert (label, defect) == (0, 0) and mask.dtype == bool and not mask.any()
    scratch = background.copy(); scratch[2:6, 3] = 3
    label, defect, mask = _crop_label(scratch, 1, 3, 0.01, [1, 2, 3], tiled=True)
    assert (label, defect) == (1, 3) and mask.sum() == 4
