"""Headline numbers for `dvc metrics show` (with their provenance: commit, params files, seeds, compute, date)
and sweep curves for `dvc plots show`."""

from __future__ import annotations

import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import BASE_EXPERIMENT, EXPERIMENTS_DIR, split_seed


def headline(cls: pd.DataFrame, rob: pd.DataFrame, unc: pd.DataFrame, sal: pd.DataFrame) -> dict:
    """{configuration: {metric: value}}: test F1 of each classifier, F1 at the sweeps' middle
    strengths, the fakeness correlation, and the median saliency IoU of every method; each the
    mean over seeds (a run's name without `-s{seed}`)."""
    sums: dict = {}

    def put(run, key, value):
        if value is not None and not np.isnan(value):
            sums.setdefault((split_seed(run)[0], key), []).append(float(value))

    for r in cls[cls["metric"] == "f1"].itertuples():
        put(r.run, f"f1_{r.model}", r.value)
    for attack in ("pgd", "noise"):
        sweep = rob[(rob["metric"] == "f1") & rob["condition"].str.startswith(attack + "=")]
        strengths = sorted({float(c.split("=")[1]) for c in sweep["condition"]})
        if strengths:
            middle = strengths[len(strengths) // 2]
            for r in sweep[sweep["condition"].map(lambda c: float(c.split("=")[1]) == middle)].itertuples():
                put(r.run, f"f1_{attack}_{middle:g}", r.value)
    for r in unc.itertuples():
        put(r.run, f"fakeness_r_{r.model}", r.value)
    if not sal.empty:
        for r in sal[sal["metric"] == "iou_median"].itertuples():  # rows of the attribution subset apart (table 5's crops)
            put(r.run, f"iou_median_{r.model}" + ("_subset" if str(r.condition).endswith("_subset") else ""), r.value)
    out: dict = {}
    for (config, key), values in sums.items():
        out.setdefault(config, {})[key] = round(float(np.mean(values)), 6)
        out[config]["n_seeds"] = max(out[config].get("n_seeds", 0), len(values))
    return out


def sweep_table(rob: pd.DataFrame, attack: str) -> pd.DataFrame:
    """Wide table: strength, then the F1 of every model (configuration:model, mean over seeds)."""
    r = rob[(rob["metric"] == "f1") & rob["condition"].str.startswith(attack + "=")].copy()
    r["strength"] = r["condition"].str.split("=").str[1].astype(float)
    r["series"] = r["run"].map(lambda run: split_seed(run)[0]) + ":" + r["model"]
    return r.pivot_table(index="strength", columns="series", values="value", aggfunc="mean").reset_index()


# --- provenance: what made the numbers above --------------------------------------------------------------------

PROVENANCE = "provenance"  # metrics.json's key beside the configurations' numbers


def code_commit(where: Path | None = None) -> str | None:
    """The git HEAD of the checkout that holds the cfgan code that ran (`where`: this package's folder), with
    `-dirty` when tracked files differ from it (as `git describe --dirty`); None outside a git checkout or
    without git. The package's folder, not the working directory: the code is what a commit pins (a workflow
    copied elsewhere still runs this checkout's code)."""
    where = Path(__file__).resolve().parent if where is None else where

    def git(*args: str):
        return subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=60)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("-dirty" if status.returncode != 0 or status.stdout.strip() else "")


# How evaluate/run.py's notes name the checkpoint's compute record (trained) and the evaluating step's (evaluated)
_PRECISIONS = re.compile(r"trained at (?P<trained>\w+) on (?P<tdevice>[\w:]+), evaluated at (?P<evaluated>\w+) on (?P<edevice>[\w:]+)")
_EVALUATED_ONLY = re.compile(r"(?<!, )evaluated at (?P<evaluated>\w+) on (?P<edevice>[\w:]+)")  # multi-class decisions
_SAME_CPU = re.compile(r"(?:^|; )CPU (?P<cpu>[^;]+)")
_TWO_CPUS = re.compile(r"trained on CPU (?P<trained>.+?), evaluated on CPU (?P<evaluated>[^;]+)")
_EVALUATED_CPU = re.compile(r"(?:^|; )evaluated on CPU (?P<evaluated>[^;]+)")
_GPU = re.compile(r"(?P<when>trained|evaluated) on GPU (?P<gpu>[^;]+)")


def compute_from_notes(notes) -> dict:
    """{trained, evaluated}: {precision, device, cpu, gpu}: the sorted distinct values the evaluation rows' notes
    name (evaluate/run.py's `_run_note` writes each checkpoint's compute record and the evaluating step's there:
    the report reads only the evaluations). A CPU recorded as `not recorded` (checkpoints of older code) is left
    out; an empty list: no row names one."""
    found = {when: {k: set() for k in ("precision", "device", "cpu", "gpu")} for when in ("trained", "evaluated")}
    for note in {str(n) for n in notes if isinstance(n, str) and n}:
        for m in _PRECISIONS.finditer(note):
            found["trained"]["precision"].add(m["trained"]); found["trained"]["device"].add(m["tdevice"])
            found["evaluated"]["precision"].add(m["evaluated"]); found["evaluated"]["device"].add(m["edevice"])
        if not _PRECISIONS.search(note):
            for m in _EVALUATED_ONLY.finditer(note):
                found["evaluated"]["precision"].add(m["evaluated"]); found["evaluated"]["device"].add(m["edevice"])
        for m in _SAME_CPU.finditer(note):
            found["trained"]["cpu"].add(m["cpu"].strip()); found["evaluated"]["cpu"].add(m["cpu"].strip())
        for m in _TWO_CPUS.finditer(note):
            found["trained"]["cpu"].add(m["trained"].strip()); found["evaluated"]["cpu"].add(m["evaluated"].strip())
        for m in _EVALUATED_CPU.finditer(note):
            found["evaluated"]["cpu"].add(m["evaluated"].strip())
        for m in _GPU.finditer(note):
            found[m["when"]]["gpu"].add(m["gpu"].strip())
    found["trained"]["cpu"].discard("not recorded")
    return {when: {k: sorted(v) for k, v in kinds.items()} for when, kinds in found.items()}


def experiment_of_files(params_files: list[str]) -> str:
    """The experiment a command's params files name: the overlay `workflow/experiments/<name>.yaml` among them
    (config.EXPERIMENTS_DIR), else the base experiment."""
    for f in params_files:
        path = Path(f)
        if path.suffix in (".yaml", ".yml") and path.parent.parts[-2:] == EXPERIMENTS_DIR.parts:
            return path.stem
    return BASE_EXPERIMENT


def provenance(params_files: list[str] | None, frames: list[pd.DataFrame], showcase: str | None) -> dict:
    """What made the report's numbers, for metrics.json: the code's commit, the command's params files and the
    experiment they name (a step cannot know the front door that called it: `cfgan publish --command` records
    that), the data set(s) and seeds the evaluations name, where and at which precision the models were trained
    and evaluated (from the evaluation rows' notes), the configuration figures 2 and 4 show, and the date (UTC)."""
    rows = pd.concat([f for f in frames if not f.empty], ignore_index=True) if any(not f.empty for f in frames) else pd.DataFrame()
    runs = rows["run"].dropna().astype(str) if "run" in rows else pd.Series(dtype=str)
    seeds = sorted({s for s in (split_seed(r)[1] for r in runs) if s is not None})
    datasets = sorted(rows["dataset"].dropna().astype(str).unique()) if "dataset" in rows else []
    return {
        "commit": code_commit(),
        "params_files": None if params_files is None else [str(f) for f in params_files],
        "experiment": experiment_of_files(params_files or []),
        "dataset": ", ".join(datasets) or None,
        "seeds": seeds,
        "compute": compute_from_notes(rows["note"] if "note" in rows else []),
        "showcase": showcase,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
