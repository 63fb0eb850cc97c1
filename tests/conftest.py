import io
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
TINY = [ROOT / "params.yaml", ROOT / "workflow/profiles/tiny/params.yaml"]


@pytest.fixture
def tiny_params():
    from cfgan.config import load_params
    return load_params(TINY)


@pytest.fixture
def write_params(tmp_path):
    """Write a params overlay and return [params.yaml, overlay]."""
    def _write(overlay: dict, name="overlay.yaml"):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(overlay))
        return [ROOT / "params.yaml", path]
    return _write


def save_image(path: Path, size=(32, 32), value=None, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8) if value is None else np.full((size[1], size[0], 3), value, np.uint8)
    Image.fromarray(arr).save(path)
    return path


def save_mask(path: Path, mask: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    return path


def need_shared(name):
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not present (real images are read from ../shared/data; see its README)")
    return folder


def copy_workflow(dest: Path):
    """A minimal copy of the project for running the pipeline in isolation."""
    for item in ("Snakefile", "params.yaml", "workflow"):
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, dest / item, symlinks=True)
        else:
            shutil.copy2(src, dest / item)
    # the schema symlink points into src/; make it a real file in the copy
    schema = dest / "workflow/schemas/params.schema.yaml"
    schema.unlink()
    shutil.copy2(ROOT / "src/cfgan/params.schema.yaml", schema)
    return dest


def run_snakemake(cwd: Path, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    """`snakemake --profile workflow/profiles/tiny ARGS` in `cwd`, with this interpreter's tools on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **(env or {})}
    return subprocess.run([sys.executable, "-m", "snakemake", "--profile", "workflow/profiles/tiny", *args],
                          cwd=cwd, capture_output=True, text=True, env=env)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One uninterrupted tiny-profile run per test session: (its folder, the finished process, its
    wall time in s). The end-to-end test checks it; the fault campaign's quick mode uses it as the
    reference its killed runs must equal (one tiny run fewer in CI). Tests must not change its
    tables."""
    work = copy_workflow(tmp_path_factory.mktemp("tiny-run"))
    start = time.perf_counter()
    proc = run_snakemake(work, "all")
    return work, proc, time.perf_counter() - start


@pytest.fixture(scope="session")
def fault_campaign(tiny_run, tmp_path_factory):
    """`benchmarks/faults.py --quick` against the shared tiny run, its folders kept: (the finished
    process, the DVC chain's folder). That chain ends in a finished `dvc repro` of the tiny dvc.yaml
    (git and DVC initialised, killed once and resumed, its tables equal to the Snakemake run's), so
    the DVC test goes on from it instead of running the whole pipeline a fourth time in CI."""
    reference, finished, seconds = tiny_run
    assert finished.returncode == 0, finished.stderr[-3000:]  # else faults.py would wait for its tables forever
    keep = tmp_path_factory.mktemp("faults") / "campaign"
    proc = subprocess.run([sys.executable, "benchmarks/faults.py", "--quick", "--reference", str(reference),
                           "--duration", f"{seconds:.0f}", "--keep", str(keep)], cwd=ROOT, capture_output=True, text=True)
    return proc, keep / "dvc"


@pytest.fixture
def small_manifest(tmp_path, write_params):
    """A tiny synthetic data set through the CLI's data steps; returns (train params, manifest)."""
    from cfgan.cli import main
    from cfgan.config import load_params
    from cfgan.steps import keys_for, select
    params = list(map(str, write_params({
        "datasets": {"synthetic": {"source": {"kind": "synthetic", "n_sources": 20, "size": 64, "damaged_fraction": 0.7}}},
        "generator": {"cnn_unet": {"width": 8, "depth": 2}}, "discriminator": {"resnet3": {"width": 8}},
        "train": {"steps": 6, "batch_size": 8, "val_every": 2}, "evaluate": {"batch_size": 32},
    })))
    assert main(["synthetic", "--params", *params, "--dataset", "synthetic", "--out", str(tmp_path / "raw")]) == 0
    assert main(["split", "--params", *params, "--index", str(tmp_path / "raw/index.csv"), "--out", str(tmp_path / "s.csv")]) == 0
    assert main(["crop", "--params", *params, "--dataset", "synthetic", "--split-index", str(tmp_path / "s.csv"),
                 "--out", str(tmp_path / "proc")]) == 0
    return select(load_params(params), keys_for("train")), tmp_path / "proc/manifest.csv"




def zip_bytes(members: dict[str, bytes]) -> bytes:
    """A zip archive, in memory, holding `members` (name -> bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def crops_from(tmp: Path, overlay: dict) -> tuple[list[str], Path]:
    """params.yaml + `overlay` (written to tmp), through the CLI's data steps on the synthetic set;
    returns the params files and the manifest."""
    from cfgan.cli import main
    (tmp / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    files = [str(ROOT / "params.yaml"), str(tmp / "overlay.yaml")]
    assert main(["synthetic", "--params", *files, "--dataset", "synthetic", "--out", str(tmp / "raw")]) == 0
    assert main(["split", "--params", *files, "--index", str(tmp / "raw/index.csv"), "--out", str(tmp / "s.csv")]) == 0
    assert main(["crop", "--params", *files, "--dataset", "synthetic", "--split-index", str(tmp / "s.csv"),
                 "--out", str(tmp / "proc")]) == 0
    return files, tmp / "proc/manifest.csv"

