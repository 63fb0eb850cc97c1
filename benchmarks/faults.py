"""Fault campaign: SIGKILL the pipeline at seeded random moments and check what survives.

1. Runs the tiny profile once, uninterrupted (the reference; its wall time T sets the clock).
2. Snakemake: in a fresh copy, starts `snakemake --profile workflow/profiles/tiny all` and kills
   its whole process group with SIGKILL at N moments drawn uniformly over [0, T] of the chain's
   clock (seeded), rerunning the same command after each kill (after `snakemake --unlock`: a
   killed Snakemake leaves its lock, and says so) until it finishes.
3. DVC: the same for `OMP_NUM_THREADS=1 dvc repro workflow/profiles/tiny/dvc.yaml` with M kills (no
   unlock needed; one thread per step, like the tiny profile's Snakemake jobs, so that both front
   doors compute bit for bit the same).

A kill is survived when, right after it, no file under a final name is half-written (every CSV,
PNG, NPZ, JSON and checkpoint that exists reads back), the rerun starts and proceeds without an
error of its own, and the finished run's tables and metrics are byte-identical to the reference.

    python benchmarks/faults.py             # full: 10 Snakemake kills, 3 DVC kills
    python benchmarks/faults.py --quick     # CI: 2 + 1 kills
    python benchmarks/faults.py --kills 20 --dvc-kills 5 --seed 7 --keep /tmp/faults
    python benchmarks/faults.py --reference /tmp/faults/reference --kills 0 --dvc-kills 3   # reuse a reference
"""

from __future__ import annotations

import argparse
import json
import re
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--profile", "workflow/profiles/tiny", "all"]
DVC = [sys.executable, "-m", "dvc"]
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def copy_project(dest: Path, with_dvc: bool) -> Path:
    dest.mkdir(parents=True)
    for item in ("Snakefile", "params.yaml", "workflow") + (("src", "dvc.yaml", ".gitignore") if with_dvc else ()):
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, dest / item, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / item)
    schema = dest / "workflow/schemas/params.schema.yaml"  # a symlink into src/: make it a file
    schema.unlink()
    shutil.copy2(ROOT / "src/cfgan/params.schema.yaml", schema)
    if with_dvc:
        git = ["git", "-c", "user.name=faults", "-c", "user.email=faults@localhost"]
        for cmd in ([*git, "init", "-q"], [*DVC, "init", "-q"], ["cp", str(ROOT / ".dvc/config"), ".dvc/config"],
                    [*git, "add", "-A"], [*git, "commit", "-qm", "faults"]):
            subprocess.run(cmd, cwd=dest, env=ENV, check=True, capture_output=True)
    return dest


def finals(work: Path) -> dict[str, bytes]:
    """What the comparison covers: every table (CSV and Markdown) and the metrics, without metrics.json's
    `provenance` (its date and the checkout's commit say when and from where, and differ between the runs)
    and without the table notes' measured cost per crop (a timing)."""
    res = work / "results/synthetic/base"
    paths = sorted((res / "tables").glob("*")) + [res / "metrics.json"]

    def content(p: Path) -> bytes:
        if p.name != "metrics.json":  # a table note's measured cost per crop is a timing, not a result (and two
            # notes that differed by their timing alone are one line when the timings happen to agree)
            lines = re.sub(rb"[0-9.e+-]+ s per crop", b"<time> s per crop", p.read_bytes()).split(b"\n")
            return b"\n".join(line for i, line in enumerate(lines) if i == 0 or line != lines[i - 1])
        metrics = json.loads(p.read_text())
        metrics.pop("provenance", None)
        return json.dumps(metrics, sort_keys=True).encode()
    return {str(p.relative_to(work)): content(p) for p in paths if p.is_file()}


def half_written(work: Path) -> list[str]:
    """Files under their final names that do not read back (a temporary `.name.tmp-*` is not one:
    no step reads it; it is counted apart as litter)."""
    import numpy as np
    import pandas as pd
    from PIL import Image
    from cfgan.errors import UserError
    from cfgan.train.common import load_checkpoint
    bad = []
    for p in sorted(q for d in ("data", "results") for q in (work / d).rglob("*") if q.is_file() and ".tmp-" not in q.name):
        try:
            if p.suffix == ".csv":
                pd.read_csv(p)
            elif p.suffix == ".png":
                with Image.open(p) as im:
                    im.load()
            elif p.suffix == ".npz":
                with np.load(p) as z:
                    [z[k] for k in z.files]
            elif p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".pt":
                load_checkpoint(p)
        except (UserError, Exception) as exc:  # noqa: BLE001 - any failure to read back counts
            bad.append(f"{p.relative_to(work)}: {exc.__class__.__name__}: {str(exc)[:120]}")
    return bad


def litter(work: Path) -> int:
    return sum(1 for d in ("data", "results") for q in (work / d).rglob("*") if ".tmp-" in q.name)


def start(cmd, work: Path, log) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=work, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def chain(name: str, work: Path, cmd: list[str], moments: list[float], before_rerun: list[str] | None) -> list[dict]:
    """Run `cmd`, SIGKILL its process group at each moment of the chain clock, rerun until done."""
    log_path = work / f"faults-{name}.log"
    outcomes, t0, attempt = [], time.perf_counter(), 0
    with open(log_path, "ab") as log:
        pending = list(moments)
        while True:
            attempt += 1
            log.write(f"\n=== attempt {attempt} at {time.perf_counter() - t0:.1f} s ===\n".encode()); log.flush()
            if attempt > 1 and before_rerun:
                subprocess.run(before_rerun, cwd=work, env=ENV, stdout=log, stderr=subprocess.STDOUT)
            proc = start(cmd, work, log)
            while proc.poll() is None and not (pending and time.perf_counter() - t0 >= pending[0]):
                time.sleep(0.2)
            if proc.poll() is None:  # a kill is due
                at = pending.pop(0)
                kill_group(proc)
                bad = half_written(work)
                outcomes.append({"front door": name, "kill": len(outcomes) + 1, "at_s": round(at, 1), "half_written": bad,
                                 "rerun_error": None})
                print(f"  {name} kill {len(outcomes)} at {at:.1f} s: {len(bad)} half-written file(s) under final names", flush=True)
                continue
            if proc.returncode != 0:  # the rerun failed by itself: the last kill was not survived
                tail = log_path.read_text(errors="replace")[-1500:]
                if outcomes:
                    outcomes[-1]["rerun_error"] = f"exit {proc.returncode}: {tail}"
                print(f"  {name}: attempt {attempt} failed (exit {proc.returncode}); see {log_path}", flush=True)
                if attempt > len(moments) + 3:
                    raise SystemExit(f"{name}: keeps failing; see {log_path}")
                continue
            # finished; kills due after the end never happened
            print(f"  {name}: finished after {attempt} attempt(s), {time.perf_counter() - t0:.0f} s", flush=True)
            for at in pending:
                print(f"  {name}: the moment {at:.1f} s came after the end; not counted", flush=True)
            return outcomes


def reference_duration(ref: Path) -> float:
    """Wall time of a finished run: from the start its Snakemake log is named after to its last write."""
    from datetime import datetime
    log = max((ref / ".snakemake/log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime)
    started = datetime.strptime(log.name.split(".snakemake")[0], "%Y-%m-%dT%H%M%S.%f").timestamp()
    return log.stat().st_mtime - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs of Snakemake (default 10)")
    parser.add_argument("--dvc-kills", type=int, default=3, help="SIGKILLs of dvc repro (default 3)")
    parser.add_argument("--quick", action="store_true", help="2 + 1 kills (CI)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="work in this (new) folder and keep it")
    parser.add_argument("--reference", type=Path, help="reuse this uninterrupted run (a kept reference/ folder; waits for it to finish)")
    parser.add_argument("--duration", type=float, help="with --reference: the clock over which kills are drawn, in s "
                                                         "(default: the reference's own wall time)")
    args = parser.parse_args()
    if args.quick:
        args.kills, args.dvc_kills = 2, 1
    base = args.keep or Path(tempfile.mkdtemp(prefix="cfgan-faults-"))
    rng = random.Random(args.seed)

    if args.reference:
        ref = args.reference
        T = args.duration or reference_duration(ref)
    else:
        ref = copy_project(base / "reference", with_dvc=False)
        t0 = time.perf_counter()
        with open(ref / "faults-reference.log", "wb") as log:
            proc = subprocess.run(SNAKEMAKE, cwd=ref, env=ENV, stdout=log, stderr=subprocess.STDOUT)
        T = time.perf_counter() - t0
        if proc.returncode:
            print(f"the uninterrupted run failed; see {ref / 'faults-reference.log'}", file=sys.stderr)
            return 1
        print(f"reference: uninterrupted tiny profile in {T:.0f} s", flush=True)
    print(f"kills drawn over a {T:.0f} s clock", flush=True)

    outcomes, differences = [], {}
    for name, with_dvc, cmd, n, unlock in (
            ("snakemake", False, SNAKEMAKE, args.kills, [*SNAKEMAKE[:-1], "--unlock"]),
            # one thread per step, as the tiny profile's Snakemake jobs run (its set-threads): gradients
            # differ in the last bits between thread counts, and the tables must match bit for bit
            ("dvc", True, ["env", "OMP_NUM_THREADS=1", *DVC, "repro", "workflow/profiles/tiny/dvc.yaml"],
             args.dvc_kills, None)):
        if n <= 0:
            continue
        work = copy_project(base / name, with_dvc=with_dvc)
        moments = sorted(rng.uniform(0, T) for _ in range(n))
        print(f"{name}: {n} kills at {', '.join(f'{m:.0f}' for m in moments)} s of the chain's clock", flush=True)
        got = chain(name, work, cmd, moments, unlock)
        while not (ref / "results/synthetic/base/metrics.json").exists():  # a reused reference may still be running
            time.sleep(10)
        reference = finals(ref)
        final = finals(work)
        diff = sorted(k for k in set(reference) | set(final) if reference.get(k) != final.get(k))
        differences[name] = diff
        bad_final = half_written(work)
        for o in got:
            o["survived"] = not o["half_written"] and not o["rerun_error"] and not diff and not bad_final
        outcomes += got
        print(f"{name}: final tables {'identical to the reference' if not diff else 'DIFFER: ' + ', '.join(diff)}; "
              f"unreadable final files: {len(bad_final)}; leftover temporary files: {litter(work)}", flush=True)

    n, k = len(outcomes), sum(o["survived"] for o in outcomes)
    print(f"\nfaults survived: {k}/{n}")
    for door in ("snakemake", "dvc"):
        mine = [o for o in outcomes if o["front door"] == door]
        if mine:
            print(f"  {door}: {sum(o['survived'] for o in mine)}/{len(mine)} "
                  f"(kills at {', '.join(str(o['at_s']) for o in mine)} s of a {T:.0f} s run)")
    print("differences: " + ("none" if not any(differences.values()) else json.dumps(differences)))
    for o in outcomes:
        if not o["survived"]:
            print(f"  not survived: {o['front door']} kill {o['kill']} at {o['at_s']} s: half-written {o['half_written'][:5]}; "
                  f"rerun error: {(o['rerun_error'] or '')[-600:]}")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 0 if k == n else 1


if __name__ == "__main__":
    sys.exit(main())
