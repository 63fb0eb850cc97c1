"""The SLURM profile survives its own README (issue 24, item 2).

The command is read out of README.md and docs/clusters.md (so this test rots with them) and
resolved by Snakemake itself: a dry run (`-n -p`) with the slurm executor prints every job's
resources after the profile and the command line are merged, and its shell command, whose
OMP_NUM_THREADS={threads} is the job's resolved thread count. The dry run plans the paper grid
(params.yaml), which has no multi-class data set, so a static check adds what it cannot see:
every rule of the Snakefile (`--list-rules`) has a full request in the profile, and every rule
that declares `resources: gpu=1` gets gpu 1 there.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "workflow/profiles/slurm/config.yaml"
DOCS = [ROOT / "README.md", ROOT / "docs/clusters.md"]
COMMAND = re.compile(r"snakemake [^`\n]*--profile workflow/profiles/slurm[^`\n]*")
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
       "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}


def documented_commands() -> dict[Path, str]:
    found = {}
    for doc in DOCS:
        hits = COMMAND.findall(doc.read_text())
        assert hits, f"{doc.relative_to(ROOT)} shows no `snakemake ... --profile workflow/profiles/slurm` command"
        found[doc] = hits[0].strip()
    return found


def gpu_rules() -> set[str]:
    """Rules whose .smk text declares `gpu=1` under resources."""
    out = set()
    for smk in (ROOT / "workflow/rules").glob("*.smk"):
        for block in re.split(r"(?m)^(?=rule |use rule )", smk.read_text()):
            m = re.match(r"rule (\w+):", block)
            if m and re.search(r"(?m)^\s+gpu=1,?\s*$", block):
                out.add(m.group(1))
    return out


def all_rules() -> set[str]:
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--list-rules"], cwd=ROOT, env=ENV,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {line.strip() for line in proc.stdout.splitlines() if line.strip()} - {"all"}


def test_the_docs_show_one_command_that_targets_first():
    commands = set(documented_commands().values())
    assert len(commands) == 1, f"README.md and docs/clusters.md differ: {commands}"
    words = shlex.split(commands.pop())
    # --default-resources and --set-resources take every word after them: a target after them would be read as one
    assert words[1] == "all", f"put the target first: {' '.join(words)}"
    assert "--set-resources" not in words, "a command-line --set-resources replaces the profile's whole set-resources"


def test_every_rule_has_a_full_request_and_gpu_rules_a_gpu():
    profile = yaml.safe_load(PROFILE.read_text())
    assert not profile.get("default-resources"), "default-resources would be replaced by the documented --default-resources"
    requests, threads = profile["set-resources"], profile["set-threads"]
    gpu = gpu_rules()
    assert {"train", "fid", "fid_real", "classify", "robustness", "multiclass", "uncertainty", "saliency"} <= gpu
    for rule in sorted(all_rules()):
        req = requests.get(rule)
        assert req, f"rule {rule}: no set-resources entry in the slurm profile"
        assert {"mem_mb", "runtime", "cpus_per_task"} <= req.keys(), f"rule {rule}: {req}"
        assert threads.get(rule) == req["cpus_per_task"], f"rule {rule}: set-threads {threads.get(rule)} vs cpus_per_task {req['cpus_per_task']}"
        assert req.get("gpu", 0) == (1 if rule in gpu else 0), f"rule {rule}: gpu {req.get('gpu')} (declares gpu=1: {rule in gpu})"
    assert profile["cores"] >= max(threads.values())  # else Snakemake caps the threads below cpus_per_task
    overlay = yaml.safe_load((ROOT / "workflow/profiles/slurm/params.yaml").read_text())
    assert "workflow/profiles/slurm/params.yaml" in profile["configfile"] and overlay["compute"]["device"] == "cuda"


JOB = re.compile(r"^rule (\w+):\n(?P<body>(?:    .*\n)+)(?:Shell command: (?P<shell>.*)\n)?", re.M)


def test_documented_command_resolves_to_each_jobs_request():
    words = shlex.split(documented_commands()[DOCS[0]])
    assert words[0] == "snakemake"
    proc = subprocess.run([sys.executable, "-m", "snakemake", *words[1:], "-n", "-p", "--nolock"], cwd=ROOT, env=ENV,
                          capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    given = dict(w.split("=", 1) for w in words[words.index("--default-resources") + 1:] if "=" in w)
    profile = yaml.safe_load(PROFILE.read_text())
    gpu, seen = gpu_rules(), {}
    for m in JOB.finditer(out):
        rule, body, shell = m.group(1), m.group("body"), m.group("shell") or ""
        res_line = re.search(r"^    resources: (.*)$", body, re.M)
        if rule == "all":
            continue
        assert res_line, f"rule {rule}: no resources printed"
        res = dict(kv.split("=", 1) for kv in res_line.group(1).split(", "))
        t = re.search(r"OMP_NUM_THREADS=(\d+)", shell)
        threads = int(t.group(1)) if t else profile["set-threads"][rule]  # rules without a threaded step
        for key, value in given.items():  # the command line's partition and account reach every job
            assert res.get(key) == value, f"rule {rule}: {key}={res.get(key)}"
        assert int(res["cpus_per_task"]) == threads, f"rule {rule}: threads {threads} vs cpus_per_task {res['cpus_per_task']}"
        assert int(res["mem_mb"]) == profile["set-resources"][rule]["mem_mb"], f"rule {rule}: mem_mb {res['mem_mb']}"
        assert int(res["runtime"]) >= 10
        if rule in gpu:
            assert res.get("gpu") == "1", f"rule {rule}: gpu {res.get('gpu')}"
            assert "--params params.yaml workflow/profiles/slurm/params.yaml" in shell  # compute.device: cuda
        else:
            assert "gpu" not in res, f"rule {rule} asks for a GPU"
        seen[rule] = seen.get(rule, 0) + 1
    assert {"train", "train_baseline", "fid", "fid_real", "classify", "robustness", "saliency", "uncertainty", "crop"} <= seen.keys(), seen


@pytest.mark.parametrize("words", [["--default-resources", "slurm_partition=x", "all"]])
def test_a_target_after_default_resources_is_an_error_snakemake_reports(words):
    """Why the documented command puts `all` first: Snakemake reads it as a resource."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "workflow/profiles/slurm", *words, "-n", "--nolock"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert proc.returncode != 0
