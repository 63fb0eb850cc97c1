"""The paper's data sets as they really come, and folders as users bring them: small look-alikes
through ingest/download, split and crop."""

import hashlib
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from cfgan.cli import main
from cfgan.data.crop import _resize, crop_split
from cfgan.data.images import read_mask, read_rgb
from cfgan.data.index import index_folder, scan
from cfgan.errors import UserError
from conftest import ROOT, copy_workflow, save_image, zip_bytes
from rar5 import rar5_stored

CELL = 120


def _run(*argv):
    assert main([str(a) for a in argv]) == 0


# --- CASC IFW mosaics ------------------------------------------------------------------------

def _mosaic(path: Path, n: int, cols: int, damaged: bool, blank: int, seed: int) -> None:
    """n apples (discs, red if damaged, green if healthy) in a grid of `cols`; the rest blank."""
    rng = np.random.default_rng(seed)
    rows = -(-n // cols)
    out = np.full((rows * CELL, cols * CELL, 3), blank, np.uint8)
    yy, xx = np.mgrid[0:CELL, 0:CELL]
    disc = (yy - 60) ** 2 + (xx - 60) ** 2 < 50 ** 2
    for k in range(n):
        cell = rng.integers(20, 60, (CELL, CELL, 3)).astype(np.uint8)  # textured background
        colour = (200, 40, 40) if damaged else (40, 200, 40)
        cell[disc] = np.clip(np.array(colour) + rng.integers(-20, 20, (disc.sum(), 3)), 0, 255)
        r, c = divmod(k, cols)
        out[r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = cell
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(out).save(path, **({"quality": 75} if path.suffix == ".jpg" else {}))


def _casc(root: Path) -> dict:
    _mosaic(root / "2009/20090701_fuji_healthy.png", 7, 3, False, blank=0, seed=1)  # 2 blank cells
    _mosaic(root / "2009/20090701_fuji_ifw.jpg", 5, 3, True, blank=255, seed=2)  # 1 blank (white), JPEG
    _mosaic(root / "2010/20100805_golden_delicious_ifw.png", 4, 2, True, blank=0, seed=3)  # none blank
    _mosaic(root / "2010/20100805_golden_delicious_healthy.png", 6, 4, False, blank=0, seed=4)  # 2 blank
    return {"kind": "mosaic", "folders": ["2009", "2010"], "cell": CELL, "conditions": {"healthy": 0, "ifw": 1},
            "expected": {"2009": {"objects": 12, "damaged": 5}, "2010": {"objects": 11, "damaged": 4}}}


def test_casc_mosaics_become_one_labelled_source_per_apple_through_ingest_split_crop(tmp_path, write_params, capsys):
    layout = _casc(tmp_path / "casc")
    params = write_params({"run_datasets": ["casc"], "datasets": {"casc": {
        "source": {"kind": "local", "path": str(tmp_path / "casc"), "layout": layout},
        "crop": {"mode": "resize", "image_size": 32}}}})
    _run("ingest", "--params", *params, "--dataset", "casc", "--out", tmp_path / "raw")
    printed = capsys.readouterr().out
    assert "2009: 2 mosaic(s), 12 apples (5 damaged, 7 healthy), 3 blank cell(s) skipped" in printed
    assert "2010: 2 mosaic(s), 10 apples (4 damaged, 6 healthy), 2 blank cell(s) skipped" in printed
    assert "the publisher counts 11 apples (4 damaged) for 2010" in printed  # a wrong count is pointed out
    index = pd.read_csv(tmp_path / "raw/index.csv", keep_default_na=False, dtype=str)
    assert len(index) == 22 and index["source_id"].is_unique
    assert index.groupby("cultivar")["label"].apply(lambda s: sorted(s.astype(int))).to_dict() == {
        "fuji": [0] * 7 + [1] * 5, "golden_delicious": [0] * 6 + [1] * 4}
    assert set(index["date"]) == {"20090701", "20100805"}

    _run("split", "--params", *params, "--index", tmp_path / "raw/index.csv", "--out", tmp_path / "s.csv")
    _run("crop", "--params", *params, "--dataset", "casc", "--split-index", tmp_path / "s.csv", "--out", tmp_path / "proc")
    manifest = pd.read_csv(tmp_path / "proc/manifest.csv", keep_default_na=False)
    assert len(manifest) == 22 and manifest.groupby("source_id")["split"].nunique().max() == 1
    for row in manifest.itertuples():
        crop = read_rgb(tmp_path / "proc" / row.path).astype(int)
        assert crop.shape == (32, 32, 3)
        red, green = crop[12:20, 12:20, 0].mean(), crop[12:20, 12:20, 1].mean()  # the apple's centre
        assert (red > green + 80) if row.label == 1 else (green > red + 80), row.path


def test_mosaic_names_a_file_it_cannot_read_as_date_cultivar_condition(tmp_path):
    layout = _casc(tmp_path)
    _mosaic(tmp_path / "2010/notes_scan.png", 2, 2, False, blank=0, seed=5)
    _mosaic(tmp_path / "2010/20100806_york_rotten.png", 2, 2, False, blank=0, seed=6)
    Image.new("RGB", (250, 120)).save(tmp_path / "2009/20090702_york_healthy.png")
    with pytest.raises(UserError) as err:
        index_folder(tmp_path, layout)
    msg = str(err.value)
    assert "notes_scan.png: name does not match layout.pattern" in msg
    assert "20100806_york_rotten.png: condition 'rotten' is not in layout.conditions" in msg
    assert "20090702_york_healthy.png: 250x120 is not a whole number of 120 px cells" in msg
    with pytest.raises(UserError, match="layout.conditions: expected"):
        index_folder(tmp_path, {**layout, "conditions": {"ifw": 1}})


# --- EXIF orientation -----------------------------------------------------------------------

# exif_transpose applies, per orientation, the inverse of the turn that made the stored pixels
_STORED = {1: None, 3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def _phone_photo(path: Path, mask_path: Path, size: tuple[int, int], orientation: int, seed: int) -> None:
    """An upright photo with a dark crack in its top band, stored turned with an EXIF tag; mask upright."""
    w, h = size
    rng = np.random.default_rng(seed)
    upright = np.clip(200 + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), bool)
    mask[10:14, 4:60] = True  # asymmetric: a turn puts it elsewhere
    upright[mask] = 20
    im = Image.fromarray(upright)
    if _STORED[orientation] is not None:
        im = im.transpose(_STORED[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format="JPEG", quality=95, exif=exif)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(mask_path)


def test_exif_rotated_photos_with_upright_masks_give_crops_whose_mask_lies_on_the_crack(tmp_path, write_params, capsys):
    root = tmp_path / "phone"
    shots = [(3, (96, 64), "a.jpg"), (6, (96, 64), "b.JPG"), (8, (96, 64), "c.jpg"),
             (6, (64, 64), "d.jpg"),  # square: without EXIF handling it would be misaligned silently
             (1, (96, 64), "e.jpeg"), (8, (64, 96), "f.JPG")]
    for i, (orientation, size, name) in enumerate(shots):
        _phone_photo(root / "images" / name, root / "masks" / (Path(name).stem + ".png"), size, orientation, i)
    assert Image.open(root / "images/b.JPG").size == (64, 96)  # stored sideways
    assert read_rgb(root / "images/b.JPG").shape == (64, 96, 3)  # read upright
    params = write_params({"run_datasets": ["phone"], "datasets": {"phone": {
        "source": {"kind": "local", "path": str(root),
                   "layout": {"kind": "images_masks", "images": "images", "masks": "masks", "mask_min_value": 128}},
        "crop": {"mode": "tile", "crop_size": 32, "stride": 32, "image_size": 32, "damaged_min_fraction": 0.01}}}})
    _run("ingest", "--params", *params, "--dataset", "phone", "--out", tmp_path / "raw")
    printed = capsys.readouterr().out
    assert "turned upright by their EXIF orientation: 1 with orientation 3, 2 with orientation 6, 2 with orientation 8" in printed
    _run("split", "--params", *params, "--index", tmp_path / "raw/index.csv", "--out", tmp_path / "s.csv")
    _run("crop", "--params", *params, "--dataset", "phone", "--split-index", tmp_path / "s.csv", "--out", tmp_path / "proc")
    manifest = pd.read_csv(tmp_path / "proc/manifest.csv", keep_default_na=False)
    damaged = manifest[manifest["label"] == 1]
    assert len(damaged) == 12 and set(damaged["source_id"].str[-1]) == set("abcdef")  # 2 crack tiles per photo
    for row in damaged.itertuples():
        image = read_rgb(tmp_path / "proc" / row.path).astype(int).mean(axis=2)
        mask = read_mask(tmp_path / "proc" / row.mask_path, 128)
        assert image[mask].mean() < 60 and image[~mask].mean() > 170, row.path  # the mask covers the dark crack
    for row in manifest[manifest["label"] == 0].itertuples():
        assert read_rgb(tmp_path / "proc" / row.path).min() > 100  # no crack pixels in undamaged tiles


# --- the concrete archive -------------------------------------------------------------------

def _jpeg(array: np.ndarray, orientation: int = 1) -> bytes:
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(buf, format="JPEG", quality=90, exif=exif)
    return buf.getvalue()


def _concrete_members(prefix: str = "concreteCrackSegmentationDataset/") -> dict[str, bytes]:
    """Three photos (mixed .jpg/.JPG, one stored turned with orientation 6) and their JPEG masks."""
    members = {}
    for i, (name, crack) in enumerate([("001.jpg", True), ("002.JPG", True), ("003.jpg", False)]):
        rng = np.random.default_rng(i)
        photo = np.clip(190 + rng.normal(0, 8, (48, 80, 3)), 0, 255).astype(np.uint8)
        mask = np.zeros((48, 80), np.uint8)
        if crack:
            mask[20:26, 10:70] = 255
            photo[mask > 0] = 30
        if name == "002.JPG":  # stored sideways, displayed upright; its mask is upright
            members[prefix + "rgb/" + name] = _jpeg(np.ascontiguousarray(np.rot90(photo, 1)), orientation=6)
        else:
            members[prefix + "rgb/" + name] = _jpeg(photo)
        members[prefix + "BW/" + Path(name).stem + ".jpg"] = _jpeg(np.stack([mask] * 3, -1))  # JPEG: grey edges
    return members


def test_concrete_zip_export_is_unpacked_indexed_thresholded_and_fingerprinted(tmp_path, capsys):
    out = tmp_path / "raw"
    export = out / "downloads" / "jwsn7tfbrp-1.zip"
    export.parent.mkdir(parents=True)
    export.write_bytes(zip_bytes(_concrete_members()))
    digest = hashlib.sha256(export.read_bytes()).hexdigest()
    _run("download", "--params", ROOT / "params.yaml", "--dataset", "concrete_cracks", "--out", out)
    printed = capsys.readouterr().out
    index = pd.read_csv(out / "index.csv", keep_default_na=False, dtype=str)
    assert index["path"].str.extract(r"(rgb/\w+\.\w+)$")[0].tolist() == ["rgb/001.jpg", "rgb/002.JPG", "rgb/003.jpg"]
    assert index["label"].tolist() == ["1", "1", "0"]
    assert (index["archive_sha256"] == digest).all() and (index["archive"] == "jwsn7tfbrp-1.zip").all()
    assert f"sha256 {digest}" in printed and "turned upright by their EXIF orientation: 1 with orientation 6" in printed
    faint = re.search(r"mask values (\d+)\.\.(\d+); .* ([\d.]+)% are non-zero but below it", printed)
    assert faint and int(faint.group(2)) >= 250 and float(faint.group(3)) > 0  # JPEG edges, read as background
    marker = out / "downloads" / "jwsn7tfbrp-1.zip.d" / ".cfgan-unpacked"
    unpacked_at = marker.stat().st_mtime_ns

    _run("download", "--params", ROOT / "params.yaml", "--dataset", "concrete_cracks", "--out", out)
    assert "jwsn7tfbrp-1.zip: the same archive as the previous index" in capsys.readouterr().out
    assert marker.stat().st_mtime_ns == unpacked_at  # not unpacked again


def test_published_rar_is_size_checked_then_unpacked(tmp_path, write_params, capsys):
    rar = rar5_stored(_concrete_members())
    out = tmp_path / "raw"
    (out / "downloads").mkdir(parents=True)
    (out / "downloads/concreteCrackSegmentationDataset.rar").write_bytes(rar)
    published = {"datasets": {"concrete_cracks": {"source": {"archive": {
        "name": "concreteCrackSegmentationDataset.rar", "size": len(rar) + 1}}}}}
    assert main(["download", "--params", *map(str, write_params(published)), "--dataset", "concrete_cracks",
                 "--out", str(out)]) == 2
    assert f"{len(rar):,} bytes, but the published archive has {len(rar) + 1:,} bytes" in capsys.readouterr().err
    assert not (out / "index.csv").exists()

    published["datasets"]["concrete_cracks"]["source"]["archive"]["size"] = len(rar)
    _run("download", "--params", *write_params(published), "--dataset", "concrete_cracks", "--out", out)
    index = pd.read_csv(out / "index.csv", keep_default_na=False, dtype=str)
    assert len(index) == 3 and index["label"].tolist() == ["1", "1", "0"]
    assert (index["archive_sha256"] == hashlib.sha256(rar).hexdigest()).all()


def test_without_libarchive_the_rar_error_says_how_to_unpack_and_a_hand_unpacked_folder_is_used(
        tmp_path, write_params, capsys, monkeypatch):
    rar = rar5_stored(_concrete_members())
    out = tmp_path / "raw"
    (out / "downloads").mkdir(parents=True)
    (out / "downloads/concreteCrackSegmentationDataset.rar").write_bytes(rar)
    params = list(map(str, write_params({"datasets": {"concrete_cracks": {"source": {"archive": {
        "name": "concreteCrackSegmentationDataset.rar", "size": len(rar)}}}}})))
    monkeypatch.setitem(sys.modules, "libarchive", None)  # as on a machine without it: import fails
    assert main(["download", "--params", *params, "--dataset", "concrete_cracks", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"unrar x {out / 'downloads/concreteCrackSegmentationDataset.rar'}" in err and "bsdtar -xf" in err
    for name, data in _concrete_members().items():  # what `unrar x` would leave
        (out / "downloads" / name).parent.mkdir(parents=True, exist_ok=True)
        (out / "downloads" / name).write_bytes(data)
    _run("download", "--params", *params, "--dataset", "concrete_cracks", "--out", out)
    index = pd.read_csv(out / "index.csv", keep_default_na=False, dtype=str)
    assert len(index) == 3 and (index["archive"] == "concreteCrackSegmentationDataset.rar (unpacked by hand)").all()


def test_zip_export_wrapping_the_rar_and_two_candidates(tmp_path, write_params, capsys):
    rar = rar5_stored(_concrete_members())
    out = tmp_path / "raw"
    (out / "downloads").mkdir(parents=True)
    (out / "downloads/export.zip").write_bytes(zip_bytes({"concreteCrackSegmentationDataset.rar": rar}))
    params = write_params({"datasets": {"concrete_cracks": {"source": {"archive": {
        "name": "concreteCrackSegmentationDataset.rar", "size": len(rar)}}}}})
    _run("download", "--params", *params, "--dataset", "concrete_cracks", "--out", out)
    assert "export.zip holds concreteCrackSegmentationDataset.rar; unpacking that too" in capsys.readouterr().out
    assert len(pd.read_csv(out / "index.csv")) == 3
    (out / "downloads/concreteCrackSegmentationDataset.rar").write_bytes(rar)
    assert main(["download", "--params", *map(str, params), "--dataset", "concrete_cracks", "--out", str(out)]) == 2
    assert "keep one of them" in capsys.readouterr().err


# --- folders users bring ----------------------------------------------------------------------

def _parts(root: Path, masks: str = "beside", suffix: str = "", n: int = 3) -> None:
    """Class folders of non-square photos of different sizes, each x.jpg with its mask x.png."""
    sizes = [(585, 253), (300, 200), (253, 585)]
    for label, cls in enumerate(["ok", "defect"]):
        for i in range(n):
            w, h = sizes[i % len(sizes)]
            save_image(root / cls / f"{cls}{i}.jpg", (w, h), seed=10 * label + i)
            mask = np.zeros((h, w), np.uint8)
            mask[5:15, 5:15] = 17  # faint values, as such masks carry
            if label:
                mask[50:60, 20:200] = 255
            where = root / cls if masks == "beside" else root / masks / cls
            where.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(where / f"{cls}{i}{suffix}.png")


def test_masks_beside_the_images_are_paired_never_read_as_images(tmp_path, capsys):
    _parts(tmp_path)
    layout = {"kind": "class_folders", "classes": {"ok": 0, "defect": 1}}
    with pytest.raises(UserError) as err:  # without being told, same-stem pairs are refused
        index_folder(tmp_path, layout)
    assert "ok0.jpg and ok0.png share the stem 'ok0'" in str(err.value) and "layout.masks: beside" in str(err.value)

    (tmp_path / "defect" / "orphan.png").write_bytes((tmp_path / "defect" / "defect0.png").read_bytes())
    (tmp_path / "defect" / "notes.txt").write_text("bought 2024")
    result = scan(tmp_path, {**layout, "masks": "beside", "mask_min_value": 128})
    frame = result.frame
    assert len(frame) == 6 and frame["path"].str.endswith(".jpg").all()
    assert frame["mask_path"].str.endswith(".png").all() and sorted(frame["label"]) == [0, 0, 0, 1, 1, 1]
    notes = "\n".join(result.notes)
    assert "found 6 images (3 damaged, 3 undamaged), 6 with a mask" in notes
    assert "masks without an image (ignored): 1" in notes and "orphan.png" in notes
    assert "files that are not images (ignored): 1" in notes
    assert re.search(r"mask values 0\.\.255; with mask_min_value 128, [\d.]+% of mask pixels are damage and "
                     r"[\d.]+% are non-zero but below it \(values 17: read as background\)", notes)
    assert "faint values" not in notes
    notes = "\n".join(scan(tmp_path, {**layout, "masks": "beside"}).notes)  # default mask_min_value 1
    assert "note: masks hold faint values 17..17 beside values up to 255, read as damage now" in notes


def test_mask_suffix_and_parallel_tree_layouts(tmp_path):
    _parts(tmp_path / "a", suffix="_mask")
    frame = index_folder(tmp_path / "a", {"kind": "class_folders", "classes": {"ok": 0, "defect": 1},
                                          "masks": "beside", "mask_suffix": "_mask"})
    assert len(frame) == 6 and frame["mask_path"].str.endswith("_mask.png").all()

    flat = tmp_path / "flat" / "images"  # images_masks with the masks beside: labels from the masks
    flat.mkdir(parents=True)
    for f in (tmp_path / "a").rglob("*"):
        if f.is_file():
            shutil.copy(f, flat / f.name)
    frame = index_folder(tmp_path / "flat", {"kind": "images_masks", "images": "images", "masks": "beside",
                                             "mask_suffix": "_mask", "mask_min_value": 128})
    assert len(frame) == 6 and frame.set_index("source_id")["label"].to_dict() == {
        **{f"images/ok{i}": 0 for i in range(3)}, **{f"images/defect{i}": 1 for i in range(3)}}

    _parts(tmp_path / "b", masks="masks")
    layout = {"kind": "class_folders", "classes": {"ok": 0, "defect": 1}, "masks": "masks"}
    frame = index_folder(tmp_path / "b", layout)
    assert len(frame) == 6 and frame["mask_path"].str.contains("/masks/").all()
    Image.new("L", (585, 253)).save(tmp_path / "b/masks/ok/ok0.bmp")
    with pytest.raises(UserError, match=r"ok0\.bmp and ok0\.png both fit image ok0\.jpg"):
        index_folder(tmp_path / "b", layout)


def test_grey_rgba_and_16_bit_images_are_converted_with_a_note(tmp_path):
    Image.fromarray(np.full((20, 30), 90, np.uint8), "L").save(tmp_path / "grey.png")
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 240, 0  # fully transparent red
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    deep = np.full((20, 30), 32896, np.uint16)  # 128 * 257
    deep[0, 0] = 65535
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    assert (read_rgb(tmp_path / "grey.png") == 90).all()
    assert (read_rgb(tmp_path / "rgba.png")[..., 0] == 240).all()
    deep_rgb = read_rgb(tmp_path / "deep.png")
    assert deep_rgb[1, 1].tolist() == [128] * 3 and deep_rgb[0, 0].tolist() == [255] * 3  # scaled, not clipped
    for cls in ("ok", "defect"):
        (tmp_path / cls).mkdir()
    for name in ("grey.png", "rgba.png"):
        shutil.move(tmp_path / name, tmp_path / "ok" / name)
    shutil.move(tmp_path / "deep.png", tmp_path / "defect" / "deep.png")
    notes = "\n".join(scan(tmp_path, {"kind": "class_folders", "classes": {"ok": 0, "defect": 1}}).notes)
    assert "converted to 8-bit RGB:" in notes
    for what in ("16-bit, scaled to 8-bit", "alpha dropped", "grey-scale, copied to 3 channels"):
        assert f"1 {what}" in notes


def test_resize_keeps_the_aspect_ratio_with_padding_or_squashes_when_asked(tmp_path):
    strip = np.full((253, 585, 3), 200, np.uint8)
    padded = _resize(strip, 64, False, "pad")
    rows = np.where(padded[:, :, 0].max(axis=1) > 0)[0]
    assert padded.shape == (64, 64, 3) and len(rows) == round(253 * 64 / 585) and rows[0] == (64 - len(rows)) // 2
    assert (_resize(strip, 64, False, "squash") == 200).all()
    row = {"path": str(save_image(tmp_path / "wide.png", (585, 253), value=200)), "label": 1, "mask_path": "",
           "mask_min_value": 1, "source_id": "w", "split": "train"}
    other = {**row, "label": 0, "source_id": "v"}
    rows_all = [{**r, "split": s} for s in ("train", "val", "test") for r in (row, other)]
    manifest = crop_split(pd.DataFrame(rows_all), tmp_path / "out", {"mode": "resize", "image_size": 64}, 0)
    crop = read_rgb(tmp_path / "out" / manifest["path"][0])
    assert (crop[:10] == 0).all() and (crop[32] == 200).all()  # default fit: pad


# --- the documented commands for your own images (docs/own-data.md) and the paper profiles -------

def _readme_own_images() -> tuple[dict, list[str]]:
    text = (ROOT / "docs" / "own-data.md").read_text()
    section = text[re.search(r"^#+ Your own images$", text, re.M).start():]
    my_yaml = re.search(r"```yaml\n# my.yaml\n(.*?)```", section, re.S).group(1)
    block = re.search(r"```bash\n(snakemake .*?)\n```", section, re.S).group(1)
    return yaml.safe_load(my_yaml), [line.split("#")[0].strip() for line in block.splitlines()]


def test_the_readme_commands_for_your_own_images_work_as_written(tmp_path):
    overlay, commands = _readme_own_images()
    (tmp_path / "project").mkdir()
    work = copy_workflow(tmp_path / "project")
    parts = tmp_path / "my_parts"
    _parts(parts, n=10)  # the documented simplest layout: class folders without masks
    for png in parts.rglob("*.png"):
        png.unlink()
    overlay["datasets"]["mine"]["source"]["path"] = str(parts)  # only the folder differs from docs/own-data.md
    (work / "my.yaml").write_text(yaml.safe_dump(overlay))
    def dry(args):
        return subprocess.run([sys.executable, "-m", "snakemake", "-n", *args], cwd=work, capture_output=True, text=True)
    assert len(commands) == 2
    for command in commands:
        words = command.split()
        assert words[0] == "snakemake" and "my.yaml" in words
        proc = dry(words[1:])
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert "data/raw/mine/index.csv" in proc.stdout and "results/mine/base/tables/table1_fid.csv" in proc.stdout
    assert "results/mine/base/runs/cnn_unet-resnet3-c0-s0" in proc.stdout and "swin_unet" not in proc.stdout  # tiny grid
    swallowed = dry(["--cores", "2", "--configfile", "params.yaml", "my.yaml", "all"])  # the order an old README gave
    assert swallowed.returncode != 0 and "No such file or directory: 'all'" in swallowed.stdout + swallowed.stderr

    # the data steps the command plans, run for real with the documented my.yaml
    params = [str(work / "params.yaml"), str(work / "my.yaml")]
    _run("ingest", "--params", *params, "--dataset", "mine", "--out", tmp_path / "raw")
    _run("split", "--params", *params, "--index", tmp_path / "raw/index.csv", "--out", tmp_path / "s.csv")
    _run("crop", "--params", *params, "--dataset", "mine", "--split-index", tmp_path / "s.csv", "--out", tmp_path / "proc")
    assert len(pd.read_csv(tmp_path / "proc/manifest.csv")) == 20


@pytest.mark.parametrize("profile", ["concrete_cracks", "casc_ifw"])
def test_paper_data_set_profiles_plan_cleanly(profile):
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--profile", f"workflow/profiles/{profile}", "all"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"data/raw/{profile}/index.csv" in proc.stdout and "rule download:" in proc.stdout


# --- Python as users have it ----------------------------------------------------------------------

def test_make_finds_a_supported_interpreter_skipping_ones_that_do_not_run(tmp_path):
    from packaging.specifiers import SpecifierSet
    spec = SpecifierSet(re.search(r'requires-python = "([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1))
    assert all(v in spec for v in ("3.11", "3.12", "3.13")) and "3.10" not in spec  # snakemake 9 needs 3.11
    broken = tmp_path / "python3.99"
    broken.write_text("#!/bin/sh\nexit 1\n")  # like a pyenv shim of a version that is not selected
    broken.chmod(0o755)
    here = Path(sys.executable).parent
    proc = subprocess.run(["make", "-s", "which-python", f"PY_CANDIDATES={broken} {here / 'python'}"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    chosen = proc.stdout.strip()
    version = subprocess.run([chosen, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert chosen != str(broken) and version in spec
    proc = subprocess.run(["make", "-s", "which-python", f"PY_CANDIDATES={broken}"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and "no Python 3.11 to 3.13 found" in proc.stderr


def test_a_parallel_mask_tree_may_cover_the_damaged_class_only_but_must_exist(tmp_path):
    _parts(tmp_path, masks="masks")
    shutil.rmtree(tmp_path / "masks" / "ok")
    result = scan(tmp_path, {"kind": "class_folders", "classes": {"ok": 0, "defect": 1}, "masks": "masks"})
    assert (result.frame["mask_path"] == "").sum() == 3 and result.frame.loc[result.frame["mask_path"] == "", "label"].eq(0).all()
    assert any("masks/ok: no such folder, so the 3 images of ok/ have no masks" in n for n in result.notes)
    shutil.rmtree(tmp_path / "masks")
    with pytest.raises(UserError, match=r"masks/defect: mask folder missing"):
        index_folder(tmp_path, {"kind": "class_folders", "classes": {"ok": 0, "defect": 1}, "masks": "masks"})


def test_a_mask_stored_turned_with_an_exif_tag_is_read_upright_too(tmp_path):
    upright = np.zeros((40, 70), np.uint8)
    upright[5:10, 10:60] = 255
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(upright).transpose(_STORED[8]).save(tmp_path / "m.jpg", quality=95, exif=exif)
    assert Image.open(tmp_path / "m.jpg").size == (40, 70)
    assert (read_mask(tmp_path / "m.jpg", 128) == (upright > 0)).mean() > 0.99


# --- MVTec AD and anomalib's Folder layout ------------------------------------------------------

def _defect_photo(path: Path, mask_path: Path | None, seed: int, size: int = 32) -> None:
    """A grey 32x32 photo; with mask_path, a bright square defect and its 0/255 mask."""
    rng = np.random.default_rng(seed)
    photo = np.clip(120 + rng.normal(0, 5, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mask_path is not None:
        mask = np.zeros((size, size), np.uint8)
        y, x = 4 + seed % 12, 6 + seed % 10
        mask[y:y + 8, x:x + 10] = 255
        photo[mask > 0] = 240
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(mask_path)
    Image.fromarray(photo).save(path)


def _mvtec(root: Path) -> None:
    """train/good (3), test/good (2), test/crack and test/scratch (2 each) with ground_truth masks."""
    for i in range(3):
        _defect_photo(root / f"train/good/{i:03d}.png", None, seed=i)
    for i in range(2):
        _defect_photo(root / f"test/good/{i:03d}.png", None, seed=10 + i)
        for k, defect in enumerate(["crack", "scratch"]):
            _defect_photo(root / f"test/{defect}/{i:03d}.png", root / f"ground_truth/{defect}/{i:03d}_mask.png",
                          seed=20 + 10 * k + i)
    (root / "license.txt").write_text("CC BY-NC-SA 4.0")


def _ingest(tmp_path, write_params, root: Path, layout: dict, name: str = "mv") -> pd.DataFrame:
    params = write_params({"run_datasets": [name], "datasets": {name: {
        "source": {"kind": "local", "path": str(root), "layout": layout},
        "crop": {"mode": "resize", "image_size": 32}}}})
    _run("ingest", "--params", *params, "--dataset", name, "--out", tmp_path / "raw")
    return pd.read_csv(tmp_path / "raw/index.csv", keep_default_na=False, dtype=str)


def test_mvtec_tree_is_one_pool_good_undamaged_defects_damaged_with_their_masks(tmp_path, write_params, capsys):
    root = tmp_path / "bottle"
    _mvtec(root)
    index = _ingest(tmp_path, write_params, root, {"kind": "mvtec"})
    assert "found 9 images (4 damaged, 5 undamaged), 4 with a mask" in capsys.readouterr().out
    by_id = index.set_index("source_id")
    assert sorted(by_id.index) == sorted([f"train/good/{i:03d}" for i in range(3)] + [
        f"test/{d}/{i:03d}" for d in ("good", "crack", "scratch") for i in range(2)])  # train/good/000 != test/good/000
    assert by_id["label"].to_dict() == {sid: "0" if "/good/" in sid else "1" for sid in by_id.index}
    for sid, row in by_id.iterrows():
        if "/good/" in sid:
            assert row["mask_path"] == ""  # no mask: all background
        else:
            _, defect, stem = sid.split("/")
            assert row["mask_path"] == str(root / "ground_truth" / defect / f"{stem}_mask.png")
            assert row["path"] == str(root / "test" / defect / f"{stem}.png")
    assert "defect_class" not in index.columns  # binary by default

    params = write_params({"run_datasets": ["mv"], "datasets": {"mv": {
        "source": {"kind": "local", "path": str(root), "layout": {"kind": "mvtec"}},
        "crop": {"mode": "resize", "image_size": 32}}}})
    _run("split", "--params", *params, "--index", tmp_path / "raw/index.csv", "--out", tmp_path / "s.csv")
    split = pd.read_csv(tmp_path / "s.csv", keep_default_na=False, dtype=str)
    assert split["split"].isin(["train", "val", "test"]).all()
    # MVTec's own train/test is not kept: one pool, split by image (its train/ has no defects at all)
    assert "train" in set(split.loc[split["source_id"].str.startswith("test/crack"), "split"])


def test_mvtec_chosen_defects_and_defect_types_as_classes(tmp_path, write_params):
    from cfgan.config import dataset_defects, load_params
    root = tmp_path / "bottle"
    _mvtec(root)
    index = _ingest(tmp_path, write_params, root, {"kind": "mvtec", "defects": ["crack"]})
    assert len(index) == 7 and not index["source_id"].str.contains("scratch").any()

    layout = {"kind": "mvtec", "defects": ["scratch", "crack"], "defect_classes": True}
    index = _ingest(tmp_path, write_params, root, layout)
    by_id = index.set_index("source_id")
    assert by_id["defect_class"].to_dict() == {
        sid: "1" if "scratch" in sid else "2" if "crack" in sid else "0" for sid in by_id.index}
    assert set(by_id.loc["test/crack/000"][["defect_name", "label"]]) == {"crack", "1"}
    assert set(by_id.loc["train/good/000"][["defect_name", "label"]]) == {"undamaged", "0"}
    params = load_params(write_params({"run_datasets": ["mv"], "datasets": {"mv": {
        "source": {"kind": "local", "path": str(root), "layout": layout}, "crop": {"mode": "resize", "image_size": 32}}}}))
    assert dataset_defects(params, "mv") == ["scratch", "crack"]  # one GAN per type, named before ingest
    with pytest.raises(UserError, match=r"layout.defect_classes: true needs layout.defects"):
        index_folder(root, {"kind": "mvtec", "defect_classes": True})
    with pytest.raises(UserError) as err:
        index_folder(root, {"kind": "mvtec", "defects": ["crack", "hole"]})
    assert f"no folder {root / 'test/hole'}" in str(err.value) and "are: crack, scratch" in str(err.value)


def test_mvtec_defect_without_its_mask_is_named_with_the_expected_path_unless_allowed(tmp_path):
    root = tmp_path / "bottle"
    _mvtec(root)
    (root / "ground_truth/crack/001_mask.png").unlink()
    with pytest.raises(UserError) as err:
        index_folder(root, {"kind": "mvtec"})
    msg = str(err.value)
    assert f"{root / 'test/crack/001.png'}: no mask named 001_mask.* in {root / 'ground_truth/crack'}" in msg
    assert f"expected {root / 'ground_truth/crack/001_mask.png'}" in msg and "layout.allow_missing_masks: true" in msg
    result = scan(root, {"kind": "mvtec", "allow_missing_masks": True})
    row = result.frame.set_index("source_id").loc["test/crack/001"]
    assert row["label"] == 1 and row["mask_path"] == ""  # label only
    assert any("images without a mask" in n and "001.png" in n for n in result.notes)

    shutil.rmtree(root / "ground_truth/scratch")
    with pytest.raises(UserError, match=re.escape(f"{root / 'ground_truth/scratch'}: mask folder missing")):
        index_folder(root, {"kind": "mvtec", "defects": ["scratch"]})
    Image.new("L", (16, 16)).save(root / "ground_truth/crack/001_mask.png")
    with pytest.raises(UserError) as err:
        index_folder(root, {"kind": "mvtec", "defects": ["crack"]})
    assert f"{root / 'ground_truth/crack/001_mask.png'}: mask is (16, 16) but its image 001.png is (32, 32)" in str(err.value)
    assert str(root / "test/crack/001.png") in str(err.value)


def test_mvtec_missing_folder_and_unknown_key_are_named(tmp_path, write_params, capsys):
    root = tmp_path / "bottle"
    _mvtec(root)
    with pytest.raises(UserError, match=r"unknown key\(s\) masks; allowed keys: allow_missing_masks, defect_classes, "
                                        r"defects, kind, mask_min_value"):
        index_folder(root, {"kind": "mvtec", "masks": "ground_truth"})
    params = write_params({"run_datasets": ["mv"], "datasets": {"mv": {
        "source": {"kind": "local", "path": str(root), "layout": {"kind": "mvtec", "defect": ["crack"]}},
        "crop": {"mode": "resize", "image_size": 32}}}})
    assert main(["ingest", "--params", *map(str, params), "--dataset", "mv", "--out", str(tmp_path / "raw")]) == 2
    assert "unknown key(s) defect; allowed keys: allow_missing_masks, defect_classes, defects" in capsys.readouterr().err
    for f in (root / "test/good").iterdir():
        f.unlink()
    with pytest.raises(UserError, match=re.escape(f"{root / 'test/good'}: folder holds no images")):
        index_folder(root, {"kind": "mvtec"})
    shutil.rmtree(root / "train")
    with pytest.raises(UserError, match=re.escape(f"{root / 'train/good'}: folder missing (layout kind mvtec expects")):
        index_folder(root, {"kind": "mvtec"})


def _anomalib_folder(root: Path, suffix: str = "") -> None:
    """good/ (3), good_test/ (2), broken/ (3) and masks/ (anomalib: the mask has its image's file name)."""
    for i in range(3):
        _defect_photo(root / f"good/{i}.png", None, seed=i)
        _defect_photo(root / f"broken/{i}.png", root / f"masks/{i}{suffix}.png", seed=20 + i)
    for i in range(2):
        _defect_photo(root / f"good_test/{i}.png", None, seed=10 + i)


def test_anomalib_folder_layout_pools_normal_dirs_and_pairs_masks_by_stem(tmp_path, write_params, capsys):
    root = tmp_path / "hazelnut"
    _anomalib_folder(root)
    layout = {"kind": "folder", "normal_dir": "good", "abnormal_dir": "broken", "mask_dir": "masks",
              "normal_test_dir": "good_test"}
    index = _ingest(tmp_path, write_params, root, layout, name="hz")
    assert "found 8 images (3 damaged, 5 undamaged), 3 with a mask" in capsys.readouterr().out
    by_id = index.set_index("source_id")
    assert by_id["label"].to_dict() == {**{f"good/{i}": "0" for i in range(3)}, **{f"good_test/{i}": "0" for i in range(2)},
                                        **{f"broken/{i}": "1" for i in range(3)}}
    assert by_id["mask_path"].to_dict() == {sid: str(root / "masks" / f"{sid[-1]}.png") if sid.startswith("broken") else ""
                                            for sid in by_id.index}

    other = tmp_path / "suffixed"  # masks named <stem>_mask, no mask folder at all, masks beside
    _anomalib_folder(other, suffix="_mask")
    frame = index_folder(other, {"kind": "folder", "normal_dir": "good", "abnormal_dir": "broken", "mask_dir": "masks",
                                 "mask_suffix": "_mask"})
    assert frame["mask_path"].str.endswith("_mask.png").sum() == 3 and len(frame) == 6
    frame = index_folder(other, {"kind": "folder", "normal_dir": "good", "abnormal_dir": "broken"})
    assert (frame["mask_path"] == "").all() and sorted(frame["label"]) == [0, 0, 0, 1, 1, 1]
    for f in (other / "masks").iterdir():
        shutil.move(f, other / "broken" / f.name)
    frame = index_folder(other, {"kind": "folder", "normal_dir": "good", "abnormal_dir": "broken", "mask_dir": "broken",
                                 "mask_suffix": "_mask"})
    assert len(frame) == 6 and frame["mask_path"].str.endswith("_mask.png").sum() == 3


def test_anomalib_folder_errors_name_the_folder_key_and_file(tmp_path, write_params, capsys):
    root = tmp_path / "hazelnut"
    _anomalib_folder(root)
    layout = {"kind": "folder", "normal_dir": "good", "abnormal_dir": "broken", "mask_dir": "masks"}
    with pytest.raises(UserError, match=re.escape(f"{root / 'normal'}: folder missing (layout.normal_dir names it, "
                                                  f"relative to the source path {root})")):
        index_folder(root, {**layout, "normal_dir": "normal"})
    with pytest.raises(UserError, match=re.escape(f"{root / 'gt'}: folder missing (layout.mask_dir names it")):
        index_folder(root, {**layout, "mask_dir": "gt"})
    with pytest.raises(UserError, match=r"layout.normal_dir and layout.abnormal_dir both name"):
        index_folder(root, {**layout, "abnormal_dir": "good"})
    _defect_photo(root / "good/more/9.png", None, seed=9)
    with pytest.raises(UserError, match=re.escape(f"{root / 'good/more'}: images in a sub-folder of layout.normal_dir")):
        index_folder(root, layout)
    shutil.rmtree(root / "good/more")
    with pytest.raises(UserError, match=r"unknown key\(s\) normal_dri; missing key\(s\) normal_dir; allowed keys: "
                                        r"abnormal_dir, allow_missing_masks, kind, mask_dir"):
        index_folder(root, {"kind": "folder", "normal_dri": "good", "abnormal_dir": "broken"})
    params = write_params({"run_datasets": ["hz"], "datasets": {"hz": {
        "source": {"kind": "local", "path": str(root), "layout": {**layout, "mask_dri": "masks"}},
        "crop": {"mode": "resize", "image_size": 32}}}})
    assert main(["ingest", "--params", *map(str, params), "--dataset", "hz", "--out", str(tmp_path / "raw")]) == 2
    assert "unknown key(s) mask_dri; allowed keys: abnormal_dir, allow_missing_masks, kind, mask_dir" in capsys.readouterr().err

    (root / "masks/2.png").unlink()
    with pytest.raises(UserError) as err:
        index_folder(root, layout)
    assert f"{root / 'broken/2.png'}: no mask named 2.* in {root / 'masks'} (expected {root / 'masks/2.png'}" in str(err.value)
    frame = index_folder(root, {**layout, "allow_missing_masks": True, "normal_test_dir": "good_test"})
    assert len(frame) == 8 and frame.set_index("source_id").loc["broken/2", "mask_path"] == ""  # label only
    for f in (root / "good_test").iterdir():
        f.unlink()
    with pytest.raises(UserError, match=re.escape(f"{root / 'good_test'}: folder holds no images")):
        index_folder(root, {**layout, "normal_test_dir": "good_test", "allow_missing_masks": True})


def test_which_layouts_give_masks():
    from cfgan.data.layouts import has_masks
    assert has_masks({"kind": "mvtec"}) and has_masks({"kind": "folder", "mask_dir": "m"})
    assert not has_masks({"kind": "folder", "normal_dir": "a", "abnormal_dir": "b"})
    assert has_masks({"kind": "images_masks"}) and not has_masks({"kind": "class_folders", "classes": {"a": 0}})


def test_the_documented_mvtec_and_folder_examples_ingest_as_written(tmp_path, write_params):
    text = (ROOT / "docs" / "own-data.md").read_text()
    section = text[text.index("## MVTec AD and anomalib Folder layouts"):text.index("## Explain one image")]
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", section, re.S)]
    assert [next(iter(b["datasets"])) for b in blocks] == ["bottle", "hazelnut"]
    _mvtec(tmp_path / "bottle")
    hazelnut = tmp_path / "hazelnut"
    for i in range(3):
        _defect_photo(hazelnut / f"good/{i}.png", None, seed=i)
        _defect_photo(hazelnut / f"crack/{i}.png", hazelnut / f"mask/crack/{i}.png", seed=20 + i)
        _defect_photo(hazelnut / f"test_good/{i}.png", None, seed=10 + i)
    for block, n in zip(blocks, (9, 9)):
        name, ds = next(iter(block["datasets"].items()))
        ds["source"]["path"] = str(tmp_path / name)  # only the folder differs from the docs
        params = write_params({"run_datasets": [name], "datasets": {name: ds}})
        _run("ingest", "--params", *params, "--dataset", name, "--out", tmp_path / "raw" / name)
        index = pd.read_csv(tmp_path / "raw" / name / "index.csv", keep_default_na=False, dtype=str)
        assert len(index) == n and (index["mask_path"] != "").sum() == (4 if name == "bottle" else 3)


def test_mvtec_and_folder_layouts_with_masks_plan_the_mask_based_rows():
    from cfgan.steps import has_masks
    assert has_masks({"source": {"kind": "local", "layout": {"kind": "mvtec"}}})
    assert has_masks({"source": {"kind": "local", "layout": {"kind": "folder", "normal_dir": "n", "abnormal_dir": "a", "mask_dir": "m"}}})
    assert not has_masks({"source": {"kind": "local", "layout": {"kind": "folder", "normal_dir": "n", "abnormal_dir": "a"}}})
    assert not has_masks({"source": {"kind": "local", "layout": {"kind": "class_folders", "classes": {"ok": 0, "bad": 1}}}})
