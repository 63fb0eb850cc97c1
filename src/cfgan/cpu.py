"""CPU settings every step applies before it touches a tensor: intra-op threads and glibc's allocator.

Why the allocator: a training step at 224 px allocates and frees activations of tens of MB. glibc
serves such blocks with fresh mmap()s and returns them to the kernel on free, so every step
page-faults its activations in again. Measured with `benchmarks/perf.py --pairing cnn_unet:resnet18
[--no-malloc-tuning]` (224 px, batch 4, 2-core CPU, 4 runs each): 6.2-6.7 M page faults and 18-24 s
of kernel CPU per run; with mmap off and a 1 GiB trim threshold, 1.7 M faults, 6 s, and 33.9 -> 29.8 s
per step on average (benchmarks/README.md). The cost: the process keeps its peak heap until it
exits, which a training or evaluation step does soon.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # <malloc.h>
KEEP_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of unmapping it. False where there is no glibc
    (macOS, musl): nothing is changed there. CFGAN_MALLOC_TUNING=0 turns it off."""
    if os.environ.get("CFGAN_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    # mallopt returns 1 on success; both must succeed or the setting is only half applied.
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES))


def cores() -> int:
    """The CPUs this process may run on: its affinity mask (what SLURM's cpus_per_task, taskset or a
    container's cpuset gave it), not os.cpu_count() (the whole node: 8 jobs of a 16-core node would
    each start 16 threads)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS has no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def tune() -> bool:
    """Threads = the cores this process was given (unless OMP_NUM_THREADS says otherwise: more
    threads than cores only adds contention) and the allocator setting above (returns whether it
    applied)."""
    if "OMP_NUM_THREADS" not in os.environ:
        import torch
        torch.set_num_threads(cores())
    return keep_freed_memory()
