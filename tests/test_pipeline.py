"""End to end: the tiny profile through Snakemake, then a no-op dry run. Slow (minutes)."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import copy_workflow

ARTIFACTS = [f"tables/{t}.{ext}" for t in ("table1_fid", "table2_classification", "table3_fid_subsets",
                                            "table4_fakeness_correlation", "table5_segmentation") for ext in ("csv", "md")]
ARTIFACTS += [f"figures/{f}.png" for f in ("fig2_counterfactuals", "fig3_pgd", "fig3_noise", "fig4_saliency", "fig5_iou_quantiles")]


def snakemake(cwd: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "snakemake", "--profile", "workflow/profiles/tiny", *args],
                          cwd=cwd, capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_tiny_profile_end_to_end(tmp_path):
    work = copy_workflow(tmp_path)
    proc = snakemake(work, "all")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = work / "results" / "synthetic"
    for artifact in ARTIFACTS:
        assert (results / artifact).stat().st_size > 0, artifact
    cls = pd.read_csv(results / "tables/table2_classification.csv")
    assert cls[["accuracy", "f1", "precision", "recall"]].apply(lambda c: c.between(0, 1)).all().all()
    fid = pd.read_csv(results / "tables/table3_fid_subsets.csv")
    assert (fid.select_dtypes("number").drop(columns="cycles") >= 0).all().all()
    assert "not comparable" in (results / "tables/table1_fid.md").read_text()  # untrained Inception is declared
    corr = pd.read_csv(results / "tables/table4_fakeness_correlation.csv")
    assert corr["resnet3"].map(lambda v: math.isnan(v) or -1 <= v <= 1).all()
    seg = pd.read_csv(results / "tables/table5_segmentation.csv")
    assert set(seg["saliency"]) == {"counterfactual", "gradcam"} and seg["iou_median"].between(0, 1).all()
    again = snakemake(work, "-n", "all")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
