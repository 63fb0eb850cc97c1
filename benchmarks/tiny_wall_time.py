"""Wall time of the tiny profile, end to end (installation excluded).

Copies the workflow into a fresh temporary folder (so nothing is cached), runs
`snakemake --profile workflow/profiles/tiny all` there and prints the wall time, the number of
jobs, and the machine it ran on. Target (issue: the whole pipeline on a tiny profile): at most
10 minutes on a 2-core CPU.

    python benchmarks/tiny_wall_time.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, target <= 600 s")
    if not args.keep:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
