"""Where a step's words go: everything into its log, and what the user must see (warnings, the
error that stopped it) also onto the terminal that ran it.

`cfgan <step> --log FILE` (how the Snakemake rules call a step) sends the step's stdout and stderr,
at the file-descriptor level (so tqdm, torch and child processes too), into FILE, and keeps the
terminal's stderr aside for `say()`. Without `--log` (a person at a terminal, DVC, which shows a
stage's output itself), stderr is both the log and the terminal, and `say()` writes there once.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

_terminal = None  # the stderr the step was started with, while --log sends fds 1 and 2 to its log


@contextlib.contextmanager
def log_to(path: str | os.PathLike | None) -> Iterator[None]:
    """Within the block, stdout and stderr (fds 1 and 2) write to `path` (truncated); `say()` also
    reaches the terminal. Restored afterwards, so that it can run inside another program (tests)."""
    global _terminal
    if path is None:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    _terminal = os.fdopen(os.dup(2), "w", buffering=1, errors="replace")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        _terminal.close()
        _terminal = None


def say(text: str) -> None:
    """A line the user must see: into the step's log (stderr) and, under --log, onto the terminal."""
    print(text, file=sys.stderr, flush=True)
    if _terminal is not None:
        print(text, file=_terminal, flush=True)


def warn(step: str, text: str) -> None:
    say(f"WARNING {step}: {text}")
