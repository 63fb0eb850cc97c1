import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from cfgan.cli import main
from conftest import ROOT, TINY


def test_bad_params_exit_2_with_the_key_and_write_nothing(tmp_path, write_params, capsys):
    out = tmp_path / "raw"
    params = write_params({"grid": {"generators": ["gan9000"]}})
    code = main(["synthetic", "--params", *map(str, params), "--dataset", "synthetic", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "grid.generators.0" in err and "cnn_unet" in err
    assert not out.exists()


def test_unknown_dataset_is_named(tmp_path, capsys):
    code = main(["synthetic", "--params", *map(str, TINY), "--dataset", "nope", "--out", str(tmp_path / "x")])
    assert code == 2 and "nope" in capsys.readouterr().err


def test_data_steps_and_one_training_step_through_the_cli(tmp_path, write_params):
    params = list(map(str, write_params({
        "datasets": {"synthetic": {"source": {"kind": "synthetic", "n_sources": 20, "size": 64, "damaged_fraction": 0.7}}},
        "generator": {"cnn_unet": {"width": 8, "depth": 2}}, "discriminator": {"resnet3": {"width": 8}},
        "train": {"steps": 3, "batch_size": 8, "val_every": 2}, "evaluate": {"batch_size": 32},
    })))
    raw, interim, processed, run = tmp_path / "raw", tmp_path / "split.csv", tmp_path / "proc", tmp_path / "run"
    assert main(["synthetic", "--params", *params, "--dataset", "synthetic", "--out", str(raw)]) == 0
    assert main(["split", "--params", *params, "--index", str(raw / "index.csv"), "--out", str(interim)]) == 0
    assert main(["crop", "--params", *params, "--dataset", "synthetic", "--split-index", str(interim), "--out", str(processed)]) == 0
    manifest = pd.read_csv(processed / "manifest.csv", keep_default_na=False)
    assert set(manifest.columns) == {"path", "label", "mask_path", "source_id", "split"}
    assert (processed / manifest["path"][0]).is_file() and (processed / manifest["mask_path"][0]).is_file()
    assert main(["train", "--params", *params, "--manifest", str(processed / "manifest.csv"),
                 "--dataset", "synthetic", "--run", "cnn_unet-resnet3-c1-s0", "--out", str(run)]) == 0
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["summary"]["cycles"] == 1 and "torch" in ckpt["versions"]
    assert ckpt["params"]["train"]["steps"] == 3 and "report" not in ckpt["params"]  # only the keys it reads
    assert len(pd.read_csv(run / "log.csv")) == 3
    assert not (run / "resume.pt").exists()


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "cfgan.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and "train" in proc.stdout


def test_download_of_a_manual_data_set_says_what_to_do(tmp_path, capsys):
    out = tmp_path / "raw"
    assert main(["download", "--params", str(ROOT / "params.yaml"), "--dataset", "concrete_cracks", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "manual step" in err and "data.mendeley.com" in err and str(out / "downloads") in err
    assert not (out / "index.csv").exists()


def test_download_goes_on_by_itself_once_the_files_are_there(tmp_path):
    from conftest import save_image, save_mask
    import numpy as np
    out = tmp_path / "raw"
    for i in range(3):
        save_image(out / "downloads" / "rgb" / f"{i}.jpg", (64, 64), seed=i)
        mask = np.zeros((64, 64), bool)
        mask[10:20, :] = i > 0
        save_mask(out / "downloads" / "BW" / f"{i}.png", mask)
    assert main(["download", "--params", str(ROOT / "params.yaml"), "--dataset", "concrete_cracks", "--out", str(out)]) == 0
    index = pd.read_csv(out / "index.csv")
    assert len(index) == 3 and index["label"].tolist() == [0, 1, 1]


FAULTS = """
import resource, sys, torch
sys.path.insert(0, {src!r})
from cfgan import cpu
print(cpu.keep_freed_memory())
for _ in range(3):
    torch.ones(16 << 20)  # the heap grows to its working size either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(16 << 20)  # 64 MiB allocated, touched, freed: a training step's activations
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(setting: str) -> tuple[str, int]:
    env = {**os.environ, "CFGAN_MALLOC_TUNING": setting}
    proc = subprocess.run([sys.executable, "-c", FAULTS.format(src=str(ROOT / "src"))], env=env,
                          capture_output=True, text=True, check=True)
    applied, faults = proc.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator")
def test_cpu_tuning_reuses_freed_memory_instead_of_faulting_it_in_again():
    (on, faults_on), (off, faults_off) = _page_faults("1"), _page_faults("0")
    assert (on, off) == ("True", "False")
    # untuned, each freed block goes back to the kernel and is faulted in afresh (20 x 16,384 pages
    # with 4 KiB pages, fewer with transparent huge pages); tuned, the heap reuses it
    assert faults_on * 3 < faults_off, (faults_on, faults_off)
