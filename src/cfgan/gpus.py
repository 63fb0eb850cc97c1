"""One GPU per job on a machine with several: a pool of lock files, one per visible GPU.

Snakemake counts GPUs (`resources: gpu=1` on every rule that runs a model, `--resources gpu=8`)
but assigns no device ids, so without this every job of a multi-GPU machine would land on
`cuda:0`. At the start of a step that runs on CUDA, `claim()` takes the first free GPU's lock
(`fcntl.flock`, non-blocking) and sets CUDA_VISIBLE_DEVICES to that one GPU before CUDA
initialises; the process then sees it as `cuda:0`. The lock is held until the process exits:
the kernel frees a flock when its file is closed, so a killed job frees its GPU too (no stale
lock files to clean up). The files stay; only the locks on them matter.

Nothing is claimed where CUDA_VISIBLE_DEVICES already names exactly one GPU (a person pinned it),
inside a SLURM job that has CUDA_VISIBLE_DEVICES set (SLURM gives each job its own GPUs and numbers
them from 0 in every job, so ids there do not name the same GPU across jobs), where no GPU is
visible, or where CFGAN_GPU_POOL=0 (e.g. to let several tiny jobs share one big GPU). With
CUDA_VISIBLE_DEVICES unset, a machine's only GPU is locked too: two jobs never share it unasked. More jobs than GPUs wait for a
free one (a line on stderr says so), for CFGAN_GPU_WAIT seconds at most (default: without end,
so that `--resources gpu=N` larger than the GPU count queues instead of failing); past that, a
UserError names the lock folder and who holds what.

Lock folder: CFGAN_GPU_LOCKS, else $XDG_RUNTIME_DIR/cfgan-gpu-locks, else
/tmp/cfgan-gpu-locks-<uid>: local to the machine (the GPUs are), shared by every checkout and
every user's own jobs on it.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

ENV_POOL, ENV_LOCKS, ENV_WAIT = "CFGAN_GPU_POOL", "CFGAN_GPU_LOCKS", "CFGAN_GPU_WAIT"
_held: list["Claim"] = []  # claims of this process, kept open (and so locked) until it exits


@dataclass
class Claim:
    gpu: str        # the id as CUDA_VISIBLE_DEVICES names it (an index or a GPU-/MIG- UUID)
    path: Path
    fd: int

    def release(self) -> None:
        os.close(self.fd)  # closing the last descriptor of the file drops the flock


def lock_dir() -> Path:
    if os.environ.get(ENV_LOCKS):
        return Path(os.environ[ENV_LOCKS])
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
        return Path(runtime) / "cfgan-gpu-locks"
    return Path("/tmp") / f"cfgan-gpu-locks-{os.getuid()}"


def visible_gpus(count: int | None = None) -> list[str]:
    """The GPU ids this process may use: CUDA_VISIBLE_DEVICES's list when it is set, else
    0..n-1 with n = `device_count()` or `count` when given (tests)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        ids = ids[: ids.index("-1")] if "-1" in ids else ids  # CUDA stops at the first invalid id
        return ids if count is None else ids[:count]
    if count is None:
        count = device_count()
    return [str(i) for i in range(count)]


def device_count() -> int:
    """GPUs on this machine, counted without initialising CUDA (which would fix the visible devices
    for the rest of the process): NVML through torch, else `nvidia-smi -L`, else 0."""
    import torch
    if torch.version.cuda is None:
        return 0
    nvml = getattr(torch.cuda, "_device_count_nvml", None)
    n = nvml() if nvml is not None else -1
    if n >= 0:
        return n
    import shutil
    import subprocess
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.splitlines())


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for the error message; not the lock
    return fd


def _holders(folder: Path, ids: list[str]) -> str:
    out = []
    for gpu in ids:
        try:
            pid = (folder / f"gpu-{gpu}.lock").read_text().strip() or "?"
        except OSError:
            pid = "?"
        out.append(f"GPU {gpu}: pid {pid}")
    return ", ".join(out)


def acquire(ids: list[str], folder: Path | None = None, wait: float | None = None, poll: float = 0.5,
            say=lambda msg: print(msg, file=sys.stderr, flush=True)) -> Claim:
    """Lock the first free GPU of `ids`; wait up to `wait` seconds (None: without end) for one."""
    folder = folder or lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    deadline = None if wait is None else time.monotonic() + wait
    waiting = False
    while True:
        for gpu in ids:
            path = folder / f"gpu-{gpu}.lock"
            fd = _try_lock(path)
            if fd is not None:
                if waiting:
                    say(f"gpu pool: GPU {gpu} is free now")
                return Claim(gpu, path, fd)
        if deadline is not None and time.monotonic() >= deadline:
            raise UserError(f"all {len(ids)} visible GPUs are taken by other cfgan jobs ({_holders(folder, ids)}; "
                            f"locks in {folder}); waited {wait:g} s ({ENV_WAIT}). Run fewer GPU jobs at once "
                            f"(snakemake --resources gpu={len(ids)}), or pin one with CUDA_VISIBLE_DEVICES")
        if not waiting:
            say(f"gpu pool: all {len(ids)} GPUs are taken ({_holders(folder, ids)}); waiting for one (locks in {folder})")
            waiting = True
        time.sleep(poll)


def wants_cuda(params: dict) -> bool:
    """Whether a step with these params will run on CUDA (compute.resolve's rule), decided without
    initialising CUDA."""
    wanted = os.environ.get("CFGAN_DEVICE") or (params.get("compute") or {}).get("device", "auto")
    return wanted == "cuda" or (wanted == "auto" and device_count() > 0)


def claim(count: int | None = None) -> str | None:
    """At a CUDA step's start: take a free GPU and make it this process's only visible one.
    Returns its id, or None where nothing was claimed (see the module's docstring)."""
    if os.environ.get(ENV_POOL, "1") == "0" or _held:
        return _held[0].gpu if _held else None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and "SLURM_JOB_ID" in os.environ:
        return None
    ids = visible_gpus(count)
    if not ids or (visible is not None and len(ids) == 1):
        return None
    wait = os.environ.get(ENV_WAIT)
    got = acquire(ids, wait=float(wait) if wait else None)
    _held.append(got)
    os.environ["CUDA_VISIBLE_DEVICES"] = got.gpu
    return got.gpu
