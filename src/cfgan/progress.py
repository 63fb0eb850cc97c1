"""Progress of a long loop, for every step that shows one: tqdm's bar on a terminal; where stderr is
not a terminal (Snakemake's `log:` files, `cfgan ... --log`, DVC's captured output, a pipe), one
plain line at every tenth of the way instead of the bar's carriage-return redraws, so a log reads
top to bottom and `grep` finds each line.

`progress(...)` takes tqdm's arguments (iterable, total, initial, desc, unit, unit_scale,
disable) and gives back something used like a tqdm bar: iterated, or `update(n)` in a `with`.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

STEPS = 10        # lines per loop without a terminal: one at every 10 %
QUIET_S = 60.0    # without a total, a line at most this often


def progress(iterable=None, *, total=None, initial: int = 0, desc: str = "", unit: str = "it",
             unit_scale: bool = False, disable: bool = False, file=None):
    stream = file if file is not None else sys.stderr
    if disable or _is_terminal(stream):
        return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit_scale,
                    disable=disable, file=stream)
    if total is None and iterable is not None:
        try:
            total = len(iterable)
        except TypeError:
            total = None
    return Lines(iterable, total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit_scale, file=stream)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Lines:
    """tqdm's interface, written as whole lines: `crop:  30% 3/10 img, 00:04 elapsed, 0.75 img/s`."""

    def __init__(self, iterable=None, *, total=None, initial=0, desc="", unit="it", unit_scale=False, file=None):
        self.iterable, self.total, self.n, self.desc, self.unit = iterable, total, initial, desc, unit
        self.unit_scale, self.file = unit_scale, file if file is not None else sys.stderr
        self.start, self.last_time = time.monotonic(), time.monotonic()
        self.last_step = self._step()  # a resumed loop says nothing until its next tenth
        self.postfix, self.closed, self.said_n = "", False, initial

    def _step(self) -> int:
        return int(self.n * STEPS // self.total) if self.total else 0

    def _amount(self, n) -> str:
        return tqdm.format_sizeof(n) if self.unit_scale else str(n)

    def _line(self) -> str:
        elapsed = time.monotonic() - self.start
        done = f"{self._amount(self.n)}/{self._amount(self.total)}" if self.total else self._amount(self.n)
        share = f"{100 * self.n / self.total:3.0f}% " if self.total else ""
        rate = self.n / elapsed if elapsed > 0 else 0.0
        speed = f"{tqdm.format_sizeof(rate) if self.unit_scale else f'{rate:.3g}'} {self.unit}/s"
        head = f"{self.desc}: " if self.desc else ""
        tail = f", {self.postfix}" if self.postfix else ""
        return f"{head}{share}{done} {self.unit}, {tqdm.format_interval(elapsed)} elapsed, {speed}{tail}"

    def _say(self) -> None:
        self.file.write(self._line() + "\n")
        self.file.flush()
        self.last_time, self.said_n = time.monotonic(), self.n

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.total:
            step = self._step()
            if step > self.last_step:
                self.last_step = step
                self._say()
        elif time.monotonic() - self.last_time >= QUIET_S:
            self._say()

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items.items())

    def set_description(self, desc=None, refresh=True) -> None:
        self.desc = desc or ""

    def write(self, text: str) -> None:
        self.file.write(text + "\n")
        self.file.flush()

    def close(self) -> None:
        """The last line, where the loop moved on since the previous one (it ended between two tenths)."""
        if not self.closed and self.n != self.said_n:
            self._say()
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
