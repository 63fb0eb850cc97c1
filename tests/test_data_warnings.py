"""Issue 48, item 1: data warnings a user sees (terminal, log, warnings.json, end-of-run summary, the
HTML report), the crop step stopping on defects too small to learn with a tiling that works on the
same photos, photos smaller than crop_size, and logs without carriage-return redraws."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cfgan.cli import main
from cfgan.data.crop import crop_split, fit_small
from cfgan.data.data_warnings import for_report, summary
from conftest import ROOT, TINY, copy_workflow, save_image, save_mask

# photo sizes (width, height): most shrink a 2 px scratch under one pixel at image_size 32; the
# last three are smaller than the 64 px tile that the crop step suggests for them
SIZES = [(320, 240), (256, 256), (400, 300), (300, 200), (72, 72), (80, 60), (56, 48)]
SUGGESTION = re.compile(r"crop: (\{mode: tile[^}]*\})")


def vanishing_photos(root: Path, n: int = 22) -> Path:
    """images/ + masks/: every other photo has a long scratch 2 px wide, which a resize of the whole
    photo to 32 px averages away."""
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        mask = np.zeros((h, w), bool)
        if i % 2:
            mask[h // 2:h // 2 + 2, w // 8:w - w // 8] = True
        save_image(root / "images" / f"p{i:02d}.png", (w, h), seed=i)
        save_mask(root / "masks" / f"p{i:02d}.png", mask)
    return root


def overlay(tmp_path: Path, photos: Path, crop: dict, name: str) -> list[str]:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"run_datasets": ["mine"], "datasets": {"mine": {
        "source": {"kind": "local", "path": str(photos), "layout": {"kind": "images_masks", "images": "images", "masks": "masks"}},
        "crop": crop}}}))
    return [str(ROOT / "params.yaml"), str(path)]


@pytest.fixture
def split_index(tmp_path):
    """The vanishing-defect photos ingested and split as the pipeline does."""
    photos = vanishing_photos(tmp_path / "photos")
    params = overlay(tmp_path, photos, {"mode": "resize", "image_size": 32}, "resize.yaml")
    assert main(["ingest", "--params", *params, "--dataset", "mine", "--out", str(tmp_path / "raw")]) == 0
    assert main(["split", "--params", *params, "--index", str(tmp_path / "raw/index.csv"), "--out", str(tmp_path / "split.csv")]) == 0
    return photos, params, tmp_path / "split.csv"


def crop(params, split_csv, out, log=None):
    return main(["crop", "--params", *params, "--dataset", "mine", "--split-index", str(split_csv), "--out", str(out)]
                + (["--log", str(log)] if log else []))


def test_vanishing_defects_stop_the_crop_step_and_its_tiling_works_on_the_same_photos(split_index, tmp_path, capsys):
    photos, params, split_csv = split_index
    capsys.readouterr()
    assert crop(params, split_csv, tmp_path / "proc") == 2
    said = capsys.readouterr().err
    assert "cfgan crop: error: " in said and "10 of 11 damaged crops (91%) keep a defect" in said and "allow_small_defects: true" in said
    assert not (tmp_path / "proc").exists() and not list(tmp_path.glob(".proc.tmp-*"))  # nothing half-written
    tiling = yaml.safe_load(SUGGESTION.search(said).group(1))
    assert tiling["crop_size"] == 64 and tiling["image_size"] == 32
    # checked against these photos: some are smaller than its tile, and they are padded, as it says
    assert re.search(r"(\d+) photos smaller than crop_size 64 are padded", said)

    assert crop(overlay(tmp_path, photos, tiling, "tiled.yaml"), split_csv, tmp_path / "proc") == 0
    out = capsys.readouterr()
    padded = int(re.search(r"crop: (\d+) photos smaller than crop_size 64 were padded", out.out).group(1))
    assert padded == sum(1 for i in range(22) if min(SIZES[i % len(SIZES)]) < 64)
    saved = json.loads((tmp_path / "proc/warnings.json").read_text())["warnings"]
    small = [w for w in saved if w["kind"] == "small_defects"]
    assert not small or small[0]["share"] < 0.5  # from 100 % to (next to) none
    manifest = pd.read_csv(tmp_path / "proc/manifest.csv")
    assert set(manifest["label"]) == {0, 1}
    # the survey behind the advice labels tiles exactly as the crops were labelled
    from cfgan.data.crop import _survey
    index = pd.read_csv(split_csv, keep_default_na=False, dtype={"mask_path": str, "source_id": str})
    [tried] = _survey(index, [tiling], None, [1], lambda rec: int(rec.mask_min_value))
    assert tried["damaged"] == (manifest["label"] == 1).sum() and tried["small_photos"] == padded

    # or crop as it is, when the user says so: the warning stays, in warnings.json too
    allowed = overlay(tmp_path, photos, {"mode": "resize", "image_size": 32, "allow_small_defects": True}, "allowed.yaml")
    assert crop(allowed, split_csv, tmp_path / "allowed") == 0
    assert "WARNING crop: 10 of 11 damaged crops (91%)" in capsys.readouterr().err
    [kept] = json.loads((tmp_path / "allowed/warnings.json").read_text())["warnings"]
    assert kept["kind"] == "small_defects" and kept["share"] == round(10 / 11, 4) and kept["suggestion"] == tiling


def test_photos_smaller_than_a_tile_are_padded_or_scaled_up_with_their_masks():
    photo = np.arange(40 * 30 * 3, dtype=np.uint8).reshape(30, 40, 3)
    mask = np.zeros((30, 40), bool)
    mask[:5, :] = True
    padded, padded_mask = fit_small(photo, 48), fit_small(mask, 48, is_mask=True)
    assert padded.shape == (48, 48, 3) and padded_mask.shape == (48, 48)
    assert (padded[9:39, 4:44] == photo).all() and (padded_mask[9:39, 4:44] == mask).all()
    assert (padded[8, 4:44] == photo[1]).all() and padded_mask[:9].sum() == 4 * 48  # mirrored, the mask with it
    big = fit_small(photo, 48, "resize")
    assert big.shape == (48, 64, 3) and fit_small(mask, 48, "resize", True).dtype == bool
    assert fit_small(photo, 16) is photo


def _rows(tmp_path, masks, labels, size=(64, 64)):
    rows = []
    for i, (m, label) in enumerate(zip(masks, labels)):
        rows.append({"path": str(save_image(tmp_path / f"i{i}.png", size, seed=i)), "label": label,
                     "mask_path": str(save_mask(tmp_path / f"m{i}.png", m)), "mask_min_value": 128,
                     "source_id": f"s{i}", "split": ["train", "val", "test"][i % 3]})
    return pd.DataFrame(rows)


def test_masks_against_their_class_and_photos_without_a_crop_are_warned_and_saved(tmp_path, capsys):
    blob = np.zeros((64, 64), bool)
    blob[8:40, 8:40] = True
    sliver = np.zeros((64, 64), bool)
    sliver[0, :3] = True  # 3 px in every tile it touches: under damaged_min_fraction
    masks = [blob] * 3 + [np.zeros((64, 64), bool)] * 3 + [blob, sliver]
    labels = [1, 1, 1, 0, 0, 0, 0, 1]  # the 7th photo's folder says undamaged, its mask shows a defect
    cfg = {"mode": "tile", "crop_size": 64, "stride": 64, "image_size": 32, "damaged_min_fraction": 0.01}
    crop_split(_rows(tmp_path, masks, labels), tmp_path / "out", cfg, seed=0)
    err = capsys.readouterr().err
    assert "WARNING crop: 1 images whose mask disagrees with their folder's class" in err
    assert "WARNING crop: 1 source images gave no crop" in err and "s7" in err
    saved = {w["kind"]: w for w in json.loads((tmp_path / "out/warnings.json").read_text())["warnings"]}
    assert set(saved) == {"mask_class_conflict", "images_dropped"} and saved["images_dropped"]["files"] == ["s7"]


def test_the_end_of_run_summary_and_the_report_show_the_warnings(tmp_path):
    from docutils.core import publish_parts
    from jinja2 import Environment
    from cfgan.config import load_params
    processed = tmp_path / "data/processed"
    for ds, items in (("mine", [{"step": "crop", "kind": "small_defects", "message": "3 of 4 damaged crops (75%) "
                                 "keep a defect ...: crop: {mode: tile, crop_size: 64, stride: 32, image_size: 32}"}]),
                      ("clean", []), ("stale", [{"step": "crop", "kind": "x", "message": "from a crop step that failed"}])):
        (processed / ds).mkdir(parents=True)
        (processed / ds / "warnings.json").write_text(json.dumps({"warnings": items}))
        if ds != "stale":  # a failed crop step leaves no manifest (Snakemake removes it): its file is not current
            (processed / ds / "manifest.csv").write_text("path\n")
    text = summary(["mine", "clean", "stale", "absent"], processed)
    assert text.startswith("Data warnings (1;") and "  mine: WARNING crop: 3 of 4 damaged crops (75%)" in text
    assert "stale" not in text and summary(["clean"], processed) == ""
    # the report's first page, rendered as `snakemake --report` renders workflow/report/workflow.rst
    config = load_params(TINY)
    config["data_warnings"] = for_report(["mine", "clean"], processed)

    class Snakemake:
        pass
    Snakemake.config = config
    rst = Environment(trim_blocks=True, lstrip_blocks=True).from_string(
        (ROOT / "workflow/report/workflow.rst").read_text()).render(snakemake=Snakemake, categories={}, files=[])
    html = publish_parts(rst, writer="html", settings_overrides={"report_level": 5, "halt_level": 2})["html_body"]
    assert "Data warnings" in html and "crop: {mode: tile, crop_size: 64, stride: 32, image_size: 32}" in html
    assert html.index("Data warnings") < html.index("What this run was")
    config["data_warnings"] = {}
    clean = Environment(trim_blocks=True, lstrip_blocks=True).from_string(
        (ROOT / "workflow/report/workflow.rst").read_text()).render(snakemake=Snakemake, categories={}, files=[])
    assert "Data warnings" not in clean


PROGRESS = "from cfgan.progress import progress\nfor _ in progress(range(1000), desc='crop', unit='img'): pass\n"


def test_progress_without_a_terminal_is_a_plain_line_every_tenth_and_a_bar_on_a_terminal(tmp_path):
    log = tmp_path / "step.log"
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-c", PROGRESS], stderr=f, check=True)
    text = log.read_text()
    assert "\r" not in text and len(text.splitlines()) == 10 and text.splitlines()[-1].startswith("crop: 100% 1000/1000 img")
    # on a terminal: tqdm's bar, redrawn in place
    import fcntl
    import struct
    import termios
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    subprocess.run([sys.executable, "-c", PROGRESS], stderr=slave, check=True)
    os.close(slave)
    bar = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # Linux: EIO once the other end is closed and drained
            break
        if not chunk:
            break
        bar += chunk
    os.close(master)
    bar = bar.decode(errors="replace")
    assert "\r" in bar and "1000/1000" in bar


def test_the_crop_step_as_snakemake_calls_it_puts_warnings_and_its_error_on_the_terminal_and_all_in_its_log(split_index, tmp_path):
    """`cfgan crop ... --log FILE` (the rule's shell): the terminal gets the warnings and the error with
    the tiling; the log gets everything, progress as plain lines."""
    photos, params, split_csv = split_index
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    step = [sys.executable, "-m", "cfgan.cli", "crop", "--dataset", "mine", "--split-index", str(split_csv)]
    log = tmp_path / "logs/crop.log"
    proc = subprocess.run(step + ["--params", *params, "--out", str(tmp_path / "proc"), "--log", str(log)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert SUGGESTION.search(proc.stderr) and "cfgan crop: error:" in proc.stderr
    assert SUGGESTION.search(log.read_text()) and not (tmp_path / "proc").exists()
    allowed = overlay(tmp_path, photos, {"mode": "resize", "image_size": 32, "allow_small_defects": True}, "allowed.yaml")
    proc = subprocess.run(step + ["--params", *allowed, "--out", str(tmp_path / "proc"), "--log", str(log)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("WARNING crop: 10 of 11 damaged crops (91%)") and "crop: 100%" not in proc.stderr
    text = log.read_text()
    assert "WARNING crop: 10 of 11" in text and "crop: 100% 22/22 img" in text and "\r" not in text


@pytest.mark.slow
def test_snakemake_shows_the_tiling_on_its_console_and_sums_up_the_warnings_at_the_end(tmp_path):
    """One small Snakemake run (ingest, split, crop of 22 photos) in a copy of the workflow."""
    (tmp_path / "project").mkdir()
    work = copy_workflow(tmp_path / "project")
    photos = vanishing_photos(tmp_path / "photos")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def snakemake(crop, *args):
        (work / "my.yaml").write_text(yaml.safe_dump({"run_datasets": ["mine"], "datasets": {"mine": {
            "source": {"kind": "local", "path": str(photos), "layout": {"kind": "images_masks", "images": "images", "masks": "masks"}},
            "crop": crop}}}))
        return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", *args, "data/processed/mine/manifest.csv",
                               "--configfile", "my.yaml"], cwd=work, capture_output=True, text=True, env=env)

    failed = snakemake({"mode": "resize", "image_size": 32})
    assert failed.returncode != 0
    console = failed.stdout + failed.stderr
    assert SUGGESTION.search(console) and "cfgan crop: error:" in console, console[-3000:]
    assert not (work / "data/processed/mine/manifest.csv").exists()
    done = snakemake({"mode": "resize", "image_size": 32, "allow_small_defects": True})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "WARNING crop: 10 of 11 damaged crops" in done.stderr  # as the step ran
    end = done.stderr[done.stderr.rindex("Data warnings ("):]  # the onsuccess summary, last
    assert "mine: WARNING crop: 10 of 11 damaged crops" in end
    report = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--report", "report.html", "data/processed/mine/manifest.csv",
                             "--configfile", "my.yaml"], cwd=work, capture_output=True, text=True, env=env)
    assert report.returncode == 0, report.stderr[-3000:]
    html = (work / "report.html").read_text(errors="replace")
    assert "Data warnings" in html and "10 of 11 damaged crops" in html


@pytest.mark.slow
def test_dvc_repro_shows_the_tiling_on_its_console_and_writes_no_crops(tmp_path):
    """The other front door: the dvc.yaml `cfgan dvc-yaml` writes for the same photos, reproduced up
    to the crop stage in a fresh git + DVC project; the suggestion is on `dvc repro`'s console."""
    (tmp_path / "project").mkdir()
    work = copy_workflow(tmp_path / "project")
    photos = vanishing_photos(tmp_path / "photos")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    (work / "my.yaml").write_text(yaml.safe_dump({"run_datasets": ["mine"], "datasets": {"mine": {
        "source": {"kind": "local", "path": str(photos), "layout": {"kind": "images_masks", "images": "images", "masks": "masks"}},
        "crop": {"mode": "resize", "image_size": 32}}}}))
    (work / "dvc.yaml").unlink(missing_ok=True)
    import shutil
    shutil.copytree(ROOT / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))  # the stages' code deps
    git = ["git", "-c", "user.name=cfgan-test", "-c", "user.email=test@localhost"]
    for cmd in ([sys.executable, "-m", "cfgan.cli", "dvc-yaml", "--params", "params.yaml", "my.yaml", "--out", "dvc.yaml"],
                [*git, "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env)
        assert proc.returncode == 0, (cmd, proc.stderr[-2000:])
    failed = subprocess.run([sys.executable, "-m", "dvc", "repro", "crop_mine"], cwd=work, capture_output=True, text=True, env=env)
    assert failed.returncode != 0
    console = failed.stdout + failed.stderr
    assert SUGGESTION.search(console) and "cfgan crop: error:" in console, console[-3000:]
    assert not (work / "data/processed/mine/manifest.csv").exists()
