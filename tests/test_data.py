import http.server
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cfgan.data.crop import crop_split
from cfgan.data.download import fetch, sha256sum
from cfgan.data.extract import extract
from cfgan.data.images import read_mask, read_rgb
from cfgan.data.index import index_folder
from cfgan.data.split import assign_splits
from cfgan.data.synthetic import generate
from cfgan.errors import UserError
from conftest import need_shared, save_image, save_mask, zip_bytes


def test_synthetic_masks_are_exact(tmp_path):
    rows = generate(tmp_path, n_sources=6, size=48, damaged_fraction=0.5, seed=3)
    assert sum(r["label"] for r in rows) == 3
    for r in rows:
        image = read_rgb(r["path"]).astype(int)
        clean = read_rgb(r["path"].replace("images", "counterparts")).astype(int)
        mask = read_mask(r["mask_path"], 128)
        changed = (image != clean).any(axis=2)
        assert np.array_equal(changed, mask)  # the crack is exactly where the mask says
    again = generate(tmp_path / "again", n_sources=6, size=48, damaged_fraction=0.5, seed=3)
    assert (read_rgb(again[0]["path"]) == read_rgb(rows[0]["path"])).all()  # seeded


def _index(n_sources, per_source=3):
    rows = []
    for s in range(n_sources):
        for k in range(per_source):
            rows.append({"path": f"{s}_{k}.png", "label": s % 2, "mask_path": "", "mask_min_value": 1, "source_id": f"src{s}"})
    return pd.DataFrame(rows)


def test_split_keeps_each_source_in_one_split_and_is_stratified():
    out = assign_splits(_index(100), {"train": 0.7, "val": 0.1, "test": 0.2}, seed=1)
    assert (out.groupby("source_id")["split"].nunique() == 1).all()
    per_split = out.drop_duplicates("source_id").groupby(["split", "label"]).size()
    assert per_split["train"].tolist() == [35, 35] and per_split["val"].tolist() == [5, 5]
    assert out.equals(assign_splits(_index(100), {"train": 0.7, "val": 0.1, "test": 0.2}, seed=1))
    with pytest.raises(UserError, match="must be 1"):
        assign_splits(_index(10), {"train": 0.7, "val": 0.2, "test": 0.2}, seed=1)


def test_crop_labels_tiles_from_masks_and_keeps_splits(tmp_path):
    rows = []
    for i, split in enumerate(["train", "train", "val", "val", "test", "test"]):
        mask = np.zeros((64, 64), bool)
        if i % 2:
            mask[5:10, :] = True  # damage in the top row of tiles only
        rows.append({"path": str(save_image(tmp_path / f"img{i}.png", (64, 64), seed=i)), "label": int(i % 2),
                     "mask_path": str(save_mask(tmp_path / f"m{i}.png", mask)), "mask_min_value": 128,
                     "source_id": f"s{i}", "split": split})
    cfg = {"mode": "tile", "crop_size": 32, "stride": 32, "image_size": 16, "damaged_min_fraction": 0.01}
    manifest = crop_split(pd.DataFrame(rows), tmp_path / "out", cfg, seed=0)
    assert len(manifest) == 24
    assert manifest.groupby("source_id")["split"].nunique().max() == 1
    damaged = manifest[manifest["label"] == 1]
    assert len(damaged) == 6 and damaged["path"].str.endswith(("_000.png", "_001.png")).all()
    assert read_rgb(tmp_path / "out" / manifest["path"][0]).shape == (16, 16, 3)


def _thin_line_index(tmp_path, side=256, width=3):
    rows = []
    for i, split in enumerate(["train", "train", "val", "val", "test", "test"]):
        mask = np.zeros((side, side), bool)
        if i % 2:
            mask[100:100 + width, 20:220] = True  # a scratch 200 px long, `width` px wide
        rows.append({"path": str(save_image(tmp_path / f"img{i}.png", (side, side), seed=i)), "label": int(i % 2),
                     "mask_path": str(save_mask(tmp_path / f"m{i}.png", mask)), "mask_min_value": 128,
                     "source_id": f"s{i}", "split": split})
    return pd.DataFrame(rows)


def test_crop_stops_before_training_when_a_resize_leaves_defects_too_thin_and_names_the_tiling_that_keeps_them(tmp_path, capsys):
    import json
    index = _thin_line_index(tmp_path)
    # 256 -> 32 px shrinks the 3 px scratch to 0.4 px: all three damaged crops are affected, so the step stops
    with pytest.raises(UserError, match=r"3 of 3 damaged crops \(100%\) keep a defect .* too small to learn") as err:
        crop_split(index, tmp_path / "out", {"mode": "resize", "image_size": 32}, seed=0, dataset="mine")
    said = str(err.value)
    assert ("A tiling keeps more of them: crop: {mode: tile, crop_size: 88, stride: 44, image_size: 32, "
            "damaged_min_fraction: 0.016} (tried on these images: 0% of its 24 damaged crops too small, against 100% now)") in said
    assert "datasets.mine.crop.allow_small_defects: true" in said
    assert not (tmp_path / "out").exists()  # stopped before writing anything
    # allowed: cropped as asked, the warning on stderr and in warnings.json with the tiling
    crop_split(index, tmp_path / "allowed", {"mode": "resize", "image_size": 32, "allow_small_defects": True}, seed=0)
    assert "WARNING crop: 3 of 3 damaged crops (100%)" in capsys.readouterr().err
    [saved] = json.loads((tmp_path / "allowed/warnings.json").read_text())["warnings"]
    assert saved["kind"] == "small_defects" and saved["share"] == 1 and saved["suggestion"]["crop_size"] == 88
    # the tiling it names does keep them: no warning there
    crop_split(index, tmp_path / "tiled", saved["suggestion"], seed=0)
    assert "WARNING" not in capsys.readouterr().err
    assert json.loads((tmp_path / "tiled/warnings.json").read_text()) == {"warnings": []}
    # defects well above the limits: silent
    crop_split(_thin_line_index(tmp_path, width=40), tmp_path / "wide", {"mode": "resize", "image_size": 32}, seed=0)
    assert "WARNING" not in capsys.readouterr().err


def test_defect_size_reads_a_line_s_width_and_area():
    from cfgan.data.crop import defect_size
    mask = np.zeros((64, 64), bool)
    mask[10:14, 5:55] = True
    area, width = defect_size(mask)
    assert area == 200 and width == pytest.approx(4, rel=0.1)
    assert defect_size(np.zeros((8, 8), bool)) == (0, 0.0)


def test_crop_rejects_a_mask_of_the_wrong_size(tmp_path):
    row = {"path": str(save_image(tmp_path / "a.png", (64, 64))), "label": 1,
           "mask_path": str(save_mask(tmp_path / "a_mask.png", np.ones((32, 32), bool))), "mask_min_value": 1,
           "source_id": "a", "split": "train"}
    with pytest.raises(UserError, match="a_mask.png: mask is 32x32"):
        crop_split(pd.DataFrame([row]), tmp_path / "out", {"mode": "tile", "crop_size": 32, "image_size": 32}, 0)


def _class_folders(root: Path, n=3):
    for label, name in enumerate(["good", "bad"]):
        for i in range(n):
            save_image(root / name / f"{name}{i}.png", seed=10 * label + i)
    return {"kind": "class_folders", "classes": {"good": 0, "bad": 1}}


def test_ingest_indexes_class_folders(tmp_path):
    frame = index_folder(tmp_path, _class_folders(tmp_path))
    assert sorted(frame["label"].tolist()) == [0, 0, 0, 1, 1, 1]
    assert frame["source_id"].is_unique


def test_ingest_names_a_corrupt_image(tmp_path):
    layout = _class_folders(tmp_path)
    (tmp_path / "bad" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(UserError, match=r"broken\.jpg: not a readable image"):
        index_folder(tmp_path, layout)


def test_ingest_rejects_one_class_only_and_empty_class(tmp_path):
    layout = _class_folders(tmp_path)
    for f in (tmp_path / "bad").iterdir():
        f.unlink()
    with pytest.raises(UserError, match="holds no images"):
        index_folder(tmp_path, layout)
    with pytest.raises(UserError, match="only label"):
        index_folder(tmp_path, {"kind": "class_folders", "classes": {"good": 0}})


def test_ingest_names_a_mask_of_the_wrong_size(tmp_path):
    save_image(tmp_path / "images" / "001.png", (40, 30))
    save_mask(tmp_path / "masks" / "001.png", np.ones((20, 20), bool))
    with pytest.raises(UserError, match=r"001\.png: mask is \(20, 20\) but its image 001\.png is \(40, 30\)"):
        index_folder(tmp_path, {"kind": "images_masks", "images": "images", "masks": "masks"})


@pytest.fixture
def http_folder(tmp_path):
    """Serve tmp_path/www on a loopback port; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(www), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_download_verifies_and_extracts(http_folder, tmp_path):
    www, url = http_folder
    (www / "data.zip").write_bytes(zip_bytes({"set/a.txt": b"hello"}))
    digest = sha256sum(www / "data.zip")
    dest = fetch(f"{url}/data.zip", tmp_path / "dl" / "data.zip", digest)
    extract(dest, tmp_path / "dl" / "data")
    assert (tmp_path / "dl" / "data" / "set" / "a.txt").read_bytes() == b"hello"
    assert fetch(f"{url}/missing.zip", dest, digest) == dest  # verified copy: no network needed


def test_download_rejects_a_checksum_mismatch(http_folder, tmp_path):
    www, url = http_folder
    (www / "data.zip").write_bytes(b"tampered")
    with pytest.raises(UserError, match="checksum mismatch"):
        fetch(f"{url}/data.zip", tmp_path / "data.zip", "0" * 64)
    assert not (tmp_path / "data.zip").exists() and not (tmp_path / "data.zip.part").exists()


def test_download_resumes_a_partial_file(http_folder, tmp_path):
    www, url = http_folder
    payload = bytes(range(256)) * 64
    (www / "big.bin").write_bytes(payload)
    (tmp_path / "big.bin.part").write_bytes(payload[:1000])
    dest = fetch(f"{url}/big.bin", tmp_path / "big.bin", sha256sum(www / "big.bin"))
    assert dest.read_bytes() == payload


def test_download_without_network_says_what_to_fetch_and_where(tmp_path):
    with pytest.raises(UserError) as err:
        fetch("http://127.0.0.1:9/data.zip", tmp_path / "downloads" / "data.zip", "a" * 64, manual="see the homepage")
    msg = str(err.value)
    assert "http://127.0.0.1:9/data.zip" in msg and str(tmp_path / "downloads" / "data.zip") in msg


def test_extract_refuses_path_escape(tmp_path):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(zip_bytes({"../../escaped.txt": b"x"}))
    with pytest.raises(UserError, match="outside"):
        extract(archive, tmp_path / "into")
    assert not (tmp_path / "escaped.txt").exists()


def test_real_crackforest_and_apples_index():
    crack = index_folder(need_shared("crackforest"), {"kind": "images_masks", "images": "images", "masks": "masks", "mask_min_value": 2})
    assert len(crack) == 118 and crack["label"].sum() > 100
    apples = index_folder(need_shared("apples"), {"kind": "class_folders", "classes": {"healthy": 0, "defective": 1}})
    assert (apples["label"].value_counts() == 1500).all()


def test_data_steps_are_byte_identical_across_runs(tmp_path):
    """Determinism: the same params give the same manifest and the same crop bytes."""
    from cfgan.cli import main
    from conftest import TINY
    params = list(map(str, TINY))
    digests = []
    for run in ("a", "b"):
        root = tmp_path / run
        assert main(["synthetic", "--params", *params, "--dataset", "synthetic", "--out", str(root / "raw")]) == 0
        assert main(["split", "--params", *params, "--index", str(root / "raw/index.csv"), "--out", str(root / "s.csv")]) == 0
        assert main(["crop", "--params", *params, "--dataset", "synthetic", "--split-index", str(root / "s.csv"),
                     "--out", str(root / "proc")]) == 0
        files = sorted(p for p in (root / "proc").rglob("*") if p.is_file())
        digests.append({str(p.relative_to(root)): sha256sum(p) for p in files})
    assert digests[0] == digests[1] and len(digests[0]) > 100


def test_crackforest_split_and_crop_on_the_real_images(tmp_path):
    """The real stand-in through ingest -> split -> crop: ~60 labelled crops per photo, no leak."""
    need_shared("crackforest")
    from cfgan.cli import main
    from conftest import ROOT
    params = [str(ROOT / "params.yaml"), str(ROOT / "workflow/profiles/crackforest/params.yaml")]
    assert main(["ingest", "--params", *params, "--dataset", "crackforest", "--out", str(tmp_path / "raw")]) == 0
    assert main(["split", "--params", *params, "--index", str(tmp_path / "raw/index.csv"), "--out", str(tmp_path / "s.csv")]) == 0
    assert main(["crop", "--params", *params, "--dataset", "crackforest", "--split-index", str(tmp_path / "s.csv"),
                 "--out", str(tmp_path / "proc")]) == 0
    manifest = pd.read_csv(tmp_path / "proc/manifest.csv", keep_default_na=False)
    assert manifest.groupby("source_id")["split"].nunique().max() == 1
    per_image = manifest.groupby("source_id").size()
    assert 30 <= per_image.median() <= 60 and set(manifest["label"]) == {0, 1}
    assert manifest["split"].value_counts()["train"] > manifest["split"].value_counts()["test"]


def test_synthetic_pores_darken_both_classes_but_never_the_masks(tmp_path):
    """Pores are not damage: the masks (and labels) are those of the same seed without pores."""
    from cfgan.data.synthetic import generate
    from cfgan.data.images import read_mask, read_rgb
    plain = generate(tmp_path / "a", 6, 48, 0.5, seed=3)
    pored = generate(tmp_path / "b", 6, 48, 0.5, seed=3, pores=15)
    assert [r["label"] for r in plain] == [r["label"] for r in pored]
    for a, b in zip(plain, pored):
        assert (read_mask(a["mask_path"], 128) == read_mask(b["mask_path"], 128)).all()
        changed = (read_rgb(a["path"]).astype(int) - read_rgb(b["path"]).astype(int)).any(2)
        assert changed.any() and not (changed & read_mask(a["mask_path"], 128)).any()
