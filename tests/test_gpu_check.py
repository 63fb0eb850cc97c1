"""benchmarks/gpu_check.py --dry: the prepared GPU check runs on the CPU at toy sizes (issue 24, item 7),
with the packages the device machine lacks made unimportable for its cfgan steps."""

import json
import subprocess
import sys

from conftest import ROOT


def test_gpu_check_dry_writes_every_section(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--dry", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["mode"] == "dry" and {"env", "pairings", "cli", "wall_s"} <= report.keys()
    assert {"torch", "cuda", "gpu", "driver", "bf16", "cfgan", "packages"} <= report["env"].keys()
    assert report["pairings"], report
    for row in report["pairings"]:
        assert "error" not in row, row
        assert {"s_per_step", "img_per_s", "gflop_per_image_step", "tflop_per_s", "sync_warnings"} <= row.keys(), row
        assert row["losses_finite"] and row["size"] == 32 and row["steps"] == 2
    steps = {s["step"]: s for s in report["cli"]}
    assert {"synthetic", "split", "crop", "train", "train-baseline", "train-segmenter", "classify", "uncertainty",
            "saliency-segmenter", "explain"} <= steps.keys()
    assert all(s["rc"] == 0 for s in steps.values()), {k: s["tail"] for k, s in steps.items() if s["rc"]}
    assert steps["train"]["compute"].startswith("train: compute cpu")


def test_gpu_check_steps_keep_the_callers_pythonpath(monkeypatch, tmp_path):
    """On the device machine the carried wheels sit on PYTHONPATH (pip install --target): the cfgan
    steps must still see them (a 2026-12-04 run lost jsonschema and every step failed)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    monkeypatch.setenv("PYTHONPATH", "/tmp/site")
    env = gpu_check.cli_env("cuda")
    assert env["PYTHONPATH"].split(":") == [str(ROOT / "src"), "/tmp/site"] and env["CFGAN_DEVICE"] == "cuda"
    dry = gpu_check.cli_env("cpu", tmp_path / "blocked")
    assert dry["PYTHONPATH"].split(":") == [str(tmp_path / "blocked"), str(ROOT / "src"), "/tmp/site"] and dry["OMP_NUM_THREADS"] == "1"
