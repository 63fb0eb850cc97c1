"""Code changes invalidate exactly what they affect, in both front doors, in seconds: a "finished"
tiny run is made without training, by creating every output and recording it as done
(`snakemake --touch`, which stores each job's params, code hash included; `dvc commit`, which
stores each stage's deps). The same checks run on a really finished run in test_pipeline.py."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, copy_workflow
from test_pipeline import check_dvc_code_invalidation, check_snakemake_code_invalidation, planned_rules, snakemake

ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def create_every_output(work: Path) -> None:
    """Every file the tiny DAG writes (a name without a suffix is a directory output)."""
    summary = snakemake(work, "--summary", "all")
    assert summary.returncode == 0, summary.stderr[-2000:]
    rows = [line.split("\t")[0] for line in summary.stdout.splitlines()[1:] if "\t" in line]
    assert len(rows) > 20, summary.stdout
    for rel in rows:
        path = work / rel
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("stand-in\n")
        else:
            path.mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    work = copy_workflow(tmp_path_factory.mktemp("finished"))
    create_every_output(work)
    touch = snakemake(work, "--touch", "all")
    assert touch.returncode == 0, touch.stderr[-2000:]
    return work


def test_snakemake_reruns_exactly_the_steps_whose_code_changed(finished):
    assert planned_rules(finished) == set()
    check_snakemake_code_invalidation(finished)


def test_dvc_reruns_exactly_the_stages_whose_code_changed(finished, tmp_path):
    work = tmp_path / "dvc"
    shutil.copytree(finished, work, symlinks=True, ignore=shutil.ignore_patterns(".snakemake"))
    shutil.copytree(ROOT / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy2(ROOT / ".gitignore", work / ".gitignore")
    git = ["git", "-c", "user.name=cfgan-test", "-c", "user.email=test@localhost"]
    for cmd in ([*git, "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"], [*git, "add", "-A"], [*git, "commit", "-qm", "tiny"],
                [sys.executable, "-m", "dvc", "commit", "-f", "-q", "workflow/profiles/tiny/dvc.yaml"]):
        proc = subprocess.run(cmd, cwd=work, env=ENV, capture_output=True, text=True)
        assert proc.returncode == 0, (cmd, proc.stderr[-2000:])
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "workflow/profiles/tiny/dvc.yaml"], cwd=work, env=ENV,
                            capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout
    check_dvc_code_invalidation(work)
