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


def _normalised(cmd: str) -> tuple:
    """A cfgan command as (subcommand, {option: values}), so argument order does not matter."""
    tokens = cmd.split()
    opts, key = {}, None
    for tok in tokens[2:]:
        if tok.startswith("--"):
            key = tok
            opts[key] = ()
        else:
            opts[key] = opts[key] + (tok,)
    return tokens[1], tuple(sorted(opts.items()))


def test_an_experiment_overlay_runs_the_same_commands_with_the_same_outputs_from_both_front_doors():
    """`snakemake --profile P --config experiment=E` and the dvc.yaml built from P + the overlay run the
    same cfgan commands, writing under results/<dataset>/E/; the data steps get no overlay."""
    import itertools
    import re
    files = ["params.yaml", "workflow/profiles/tiny/params.yaml", "workflow/experiments/paper.yaml"]
    dvc = set()
    for s in build(files, None)["stages"].values():
        m = s.get("matrix") or {}
        for combo in itertools.product(*m.values()):
            cmd = s["cmd"]
            for k, v in zip(m, combo):
                cmd = cmd.replace("${item.%s}" % k, str(v))
            dvc.add(_normalised(cmd))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "workflow/profiles/tiny", "--config", "experiment=paper",
                           "-n", "-p", "--forceall", "all"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # (Snakemake's log: a redirection, or `--log FILE` for the steps that also put their warnings on the terminal)
    lines = [re.sub(r"\s*(>\s*\S+\s+2>&1|--log\s+\S+)$", "", "cfgan " + ln.split("cfgan ", 1)[1])
             for ln in proc.stdout.splitlines() if "cfgan " in ln]
    assert dvc == {_normalised(c) for c in lines}
    outs = [c for c in lines if "--out results/" in c]
    assert outs and all(re.search(r"--out results/synthetic/paper(/|\s|$)", c) for c in outs)
    data = [c for c in lines if c.split()[1] in ("synthetic", "split", "crop")]
    assert data and not any("experiments/" in c for c in data)
