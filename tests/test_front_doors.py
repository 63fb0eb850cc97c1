"""Snakemake and DVC call the same commands; the committed dvc.yaml files must be current."""

import subprocess
import sys

import yaml

from cfgan.dvc_pipeline import build
from conftest import ROOT

CONFIGS = {"dvc.yaml": ["params.yaml"],
           "workflow/profiles/tiny/dvc.yaml": ["params.yaml", "workflow/profiles/tiny/params.yaml"]}


def test_committed_dvc_yaml_files_are_generated_from_the_current_params(monkeypatch):
    monkeypatch.chdir(ROOT)
    for path, files in CONFIGS.items():
        committed = yaml.safe_load((ROOT / path).read_text())
        wdir = "../../.." if "/" in path else None
        assert committed == build(files, wdir), f"{path} is stale: rerun `cfgan dvc-yaml --params {' '.join(files)} --out {path}`"


def test_every_dvc_stage_calls_a_cfgan_subcommand_that_snakemake_also_calls():
    stages = yaml.safe_load((ROOT / "workflow/profiles/tiny/dvc.yaml").read_text())["stages"]
    dvc_steps = {s["cmd"].split()[1] for s in stages.values()}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "workflow/profiles/tiny", "-n", "-p", "--forceall", "all"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    snake_steps = {line.split("cfgan ")[1].split()[0] for line in proc.stdout.splitlines() if "cfgan " in line}
    assert dvc_steps == snake_steps


def test_snakemake_lint_is_clean():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=ROOT, capture_output=True, text=True)
    assert "Congratulations" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
