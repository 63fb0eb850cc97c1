"""The benchmark scripts run (quick mode) and print their figures; targets are judged by people
reading benchmarks/README.md, not by timed tests."""

import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_perf_quick_mode_prints_every_section():
    proc = subprocess.run([sys.executable, "benchmarks/perf.py", "--quick"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for section in ("(1) fp32 matmul peak", "(2) one adversarial training step", "(4) FID features", "FID of one run",
                    "PGD (10 steps)"):
        assert section in proc.stdout, proc.stdout
    assert "identical adversarials: True" in proc.stdout
    assert "max |difference| 0.00e+00" in proc.stdout  # the same features as pytorch-fid's own
    assert "glibc keeps freed memory: True" in proc.stdout or sys.platform != "linux"


@pytest.mark.slow
def test_fault_campaign_quick_mode_survives_every_kill():
    """Two SIGKILLs of Snakemake and one of dvc repro at seeded moments; every table as uninterrupted."""
    proc = subprocess.run([sys.executable, "benchmarks/faults.py", "--quick"], cwd=ROOT, capture_output=True, text=True)
    assert "faults survived: 3/3" in proc.stdout and "differences: none" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0
