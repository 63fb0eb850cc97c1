"""Wall time of the tiny profile, end to end (installation excluded).

Copies the workflow into a fresh temporary folder (so nothing is cached), runs
`snakemake --profile workflow/profiles/tiny all` there and prints the wall time, the number of
jobs, the machine it ran on, and the seconds each rule's jobs took (from Snakemake's own log
timestamps, so that a slow step is found by reading, not guessing). Target (the multi-class
issue): at most 5 minutes on a 2-core CPU.

    python benchmarks/tiny_wall_time.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 300


def rule_seconds(log: str) -> dict[str, tuple[int, float]]:
    """{rule: (jobs, seconds)} from a Snakemake log: a job runs from the timestamp printed above
    its `rule X:` block to the one printed above its `Finished jobid: N` line (1 s resolution;
    jobs that ran side by side each count their own time)."""
    stamp, rule, start, per_rule = None, None, {}, collections.defaultdict(lambda: [0, 0.0])
    for line in log.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            try:
                stamp = datetime.strptime(line[1:-1], "%a %b %d %H:%M:%S %Y")
            except ValueError:
                pass
        elif line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            rule = line.split()[1][:-1]
        elif line.startswith("jobid:") and rule is not None:
            start[line.split()[1]] = (rule, stamp)
            rule = None
        elif line.startswith("Finished jobid:"):
            job = line.split()[2]
            if job in start and stamp is not None:
                name, began = start.pop(job)
                per_rule[name][0] += 1
                per_rule[name][1] += (stamp - began).total_seconds()
    return {name: (n, s) for name, (n, s) in per_rule.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="run in this (new) folder and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="cfgan-tiny-"))
    work.mkdir(parents=True, exist_ok=True)
    for item in ("Snakefile", "params.yaml", "workflow"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / item)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "workflow/profiles/tiny", "all"],
                          cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    jobs = proc.stderr.count("Finished jobid")
    if proc.returncode:
        print(proc.stderr[-3000:], file=sys.stderr)
        return proc.returncode
    print(f"tiny profile end to end: {wall:.1f} s wall ({wall / 60:.2f} min), {jobs} jobs, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, target <= {TARGET_S} s")
    print("rule                    jobs  seconds")
    for name, (n, seconds) in sorted(rule_seconds(proc.stderr).items(), key=lambda kv: -kv[1][1]):
        print(f"{name:<22} {n:>5} {seconds:>8.0f}")
    if not args.keep:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
