"""The bad inputs users really produce: each gets a clear error naming the file or key, a non-zero
exit, and no output left behind (grey-scale, RGBA and 16-bit images are not errors: they are read
correctly). Counted in docs/trust.md ("Bad input")."""

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cfgan.cli import main
from cfgan.data.images import read_rgb
from conftest import ROOT, save_image, save_mask


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


def params_with(tmp_path, overlay: dict) -> list[str]:
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    return [str(ROOT / "params.yaml"), str(path)]


def ingest(tmp_path, capsys, layout: dict, root: Path):
    """`cfgan ingest` of a local folder; returns (exit status, stderr, out folder)."""
    params = params_with(tmp_path, {"datasets": {"mine": {"source": {"kind": "local", "path": str(root), "layout": layout},
                                                          "crop": {"mode": "resize", "image_size": 32}}}})
    out = tmp_path / "raw"
    code = main(["ingest", "--params", *params, "--dataset", "mine", "--out", str(out)])
    return code, capsys.readouterr().err, out


def class_folders(root: Path, n=3) -> dict:
    for label, name in enumerate(["good", "bad"]):
        for i in range(n):
            save_image(root / name / f"{name}{i}.png", (40, 40), seed=10 * label + i)
    return {"kind": "class_folders", "classes": {"good": 0, "bad": 1}}


def images_masks(root: Path, n=3) -> dict:
    for i in range(n):
        save_image(root / "images" / f"im{i}.png", (40, 40), seed=i)
        mask = np.zeros((40, 40), bool)
        mask[10:20, 5 + i:30] = i > 0
        save_mask(root / "masks" / f"im{i}.png", mask)
    return {"kind": "images_masks", "images": "images", "masks": "masks"}


def truncated_jpeg(path: Path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


# --- images and masks -------------------------------------------------------------------------

@pytest.mark.parametrize("spoil, message", [
    (lambda p: p.write_bytes(b"this is not a JPEG"), "not a readable image"),  # corrupt
    (truncated_jpeg, "not a readable image"),  # cut short (an interrupted copy)
    (lambda p: p.write_bytes(b""), "not a readable image"),  # zero bytes
])
def test_a_corrupt_or_truncated_image_is_named(tmp_path, capsys, spoil, message):
    root = tmp_path / "data"
    layout = class_folders(root)
    bad = root / "bad" / "broken.jpg"
    spoil(bad)
    code, err, out = ingest(tmp_path, capsys, layout, root)
    assert code == 2 and f"{bad}: {message}" in err and not files_under(out)


def test_an_empty_class_folder_is_named(tmp_path, capsys):
    root = tmp_path / "data"
    layout = class_folders(root)
    for f in (root / "bad").iterdir():
        f.unlink()
    code, err, out = ingest(tmp_path, capsys, layout, root)
    assert code == 2 and f"{root / 'bad'}: class folder holds no images" in err and not files_under(out)


def test_a_mask_of_the_wrong_size_is_named(tmp_path, capsys):
    root = tmp_path / "data"
    layout = images_masks(root)
    save_mask(root / "masks/im1.png", np.ones((20, 40), bool))
    code, err, out = ingest(tmp_path, capsys, layout, root)
    assert code == 2 and f"{root / 'masks/im1.png'}: mask is (40, 20) but its image im1.png is (40, 40)" in err
    assert not files_under(out)


def test_a_colour_picture_in_the_masks_folder_is_named(tmp_path, capsys):
    root = tmp_path / "data"
    layout = images_masks(root)
    save_image(root / "masks/im2.png", (40, 40), seed=7)  # the photo, not its mask (wrong mode: RGB)
    code, err, out = ingest(tmp_path, capsys, layout, root)
    assert code == 2 and f"{root / 'masks/im2.png'}: mask is a colour image (RGB)" in err and not files_under(out)


def test_an_image_without_its_mask_is_named(tmp_path, capsys):
    root = tmp_path / "data"
    layout = images_masks(root)
    (root / "masks/im0.png").unlink()
    code, err, out = ingest(tmp_path, capsys, layout, root)
    assert code == 2 and f"{root / 'images/im0.png'}: no mask named im0.*" in err and not files_under(out)


def test_grey_rgba_and_16_bit_images_are_read_correctly_not_refused(tmp_path):
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (8, 1))
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert (read_rgb(tmp_path / "grey.png") == grey[..., None]).all()
    rgba = np.dstack([grey, grey // 2, 255 - grey, np.full_like(grey, 128)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert (read_rgb(tmp_path / "rgba.png") == rgba[..., :3]).all()
    deep = (grey.astype(np.uint16) * 257)  # the same picture at 16 bits per pixel
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    assert (read_rgb(tmp_path / "deep.png") == grey[..., None]).all()  # not clipped to white


# --- params -----------------------------------------------------------------------------------

@pytest.mark.parametrize("overlay, message", [
    ({"trian": {"steps": 5}}, "unknown key(s) trian"),  # a typo
    ({"train": {"stesp": 5}}, "at 'train': unknown key(s) stesp"),
    ({"train": {"steps": "many"}}, "at 'train.steps': 'many' is not of type 'integer'"),  # a wrong type
    ({"grid": {"generators": ["vit_unet"]}}, "'vit_unet' is not allowed; allowed values: cnn_unet, swin_unet"),  # unknown architecture
    ({"grid": {"discriminators": ["resnet34"]}}, "at 'grid.discriminators.0': 'resnet34' is not allowed"),
])
def test_a_params_mistake_is_named_and_nothing_is_written(tmp_path, capsys, overlay, message):
    out = tmp_path / "raw"
    assert main(["synthetic", "--params", *params_with(tmp_path, overlay), "--dataset", "synthetic", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "overlay.yaml" in err and not out.exists()


def test_a_params_file_that_is_not_yaml_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {steps: 5\n")
    assert main(["split", "--params", str(ROOT / "params.yaml"), str(bad), "--index", "x.csv", "--out", str(tmp_path / "s.csv")]) == 2
    assert f"{bad}: not valid YAML" in capsys.readouterr().err and not (tmp_path / "s.csv").exists()


# --- archives ---------------------------------------------------------------------------------

def _zip_escaping(path: Path):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data/good/ok.txt", "fine")
        zf.writestr("../../escaped.txt", "outside")


def _tar_link_escaping(path: Path):
    with tarfile.open(path, "w") as tf:
        data = b"fine"
        info = tarfile.TarInfo("data/ok.txt"); info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("data/link"); link.type = tarfile.SYMTYPE; link.linkname = "../../../etc/passwd"
        tf.addfile(link)


@pytest.mark.parametrize("name, make, member", [("a.zip", _zip_escaping, "../../escaped.txt"), ("a.tar", _tar_link_escaping, "data/link")])
def test_a_path_escaping_archive_member_is_refused_before_anything_is_extracted(tmp_path, capsys, name, make, member):
    archive = tmp_path / name
    make(archive)
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    source = {"kind": "download", "files": [{"url": archive.as_uri(), "name": name, "sha256": sha, "extract": True}],
              "layout": {"kind": "class_folders", "classes": {"good": 0, "bad": 1}}}
    params = params_with(tmp_path, {"datasets": {"mine": {"source": source, "crop": {"mode": "resize", "image_size": 32}}}})
    out = tmp_path / "raw"
    assert main(["download", "--params", *params, "--dataset", "mine", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "would be written outside" in err and (member in err or "passwd" in err)
    extracted = out / "downloads" / (Path(name).stem + ".d")
    assert not files_under(extracted) and not (out / "index.csv").exists()
    assert not (tmp_path / "escaped.txt").exists() and not (out / "escaped.txt").exists()


# --- manifests and disks ----------------------------------------------------------------------

def test_a_manifest_pointing_at_a_deleted_crop_is_named(small_manifest, tmp_path, capsys):
    _, manifest = small_manifest
    import pandas as pd
    crop = manifest.parent / pd.read_csv(manifest)["path"].iloc[0]
    crop.unlink()
    params = [str(ROOT / "params.yaml"), str(tmp_path / "overlay.yaml")]  # small_manifest's own overlay
    run = tmp_path / "run"
    assert main(["train", "--params", *params, "--manifest", str(manifest), "--dataset", "synthetic", "--run", "cnn_unet-resnet3-c0-s0", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{crop}: not a readable image (FileNotFoundError" in err and not files_under(run)


def test_a_full_disk_is_a_clear_error_and_leaves_no_half_written_output(tmp_path):
    """RLIMIT_FSIZE makes every file over 4 kB fail to grow (EFBIG), as a full disk would (ENOSPC)."""
    out = tmp_path / "raw"
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); from cfgan.cli import main; "
            f"sys.exit(main(['synthetic', '--params', {str(ROOT / 'params.yaml')!r}, '--dataset', 'synthetic', '--out', {str(out)!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"{out}: could not be written (File too large" in proc.stderr and "Traceback" not in proc.stderr
    assert not files_under(tmp_path)  # neither the output nor its temporary sibling
