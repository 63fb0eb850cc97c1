"""What every training run shares: seeding, batches, checkpoints that say what made them (the
device and precision come from `cfgan.compute`).

Checkpoints are shared (a DVC remote, a colleague's run folder, `cfgan explain --run`), so they
hold only tensors and plain values and are read with `torch.load(weights_only=True)`: a file
whose unpickling would run code is refused, never executed.
"""

from __future__ import annotations

import functools
import pickle
import platform
import random
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..io import atomic_path


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def batch_indices(labels: torch.Tensor, batch_size: int, rng: torch.Generator, balance: bool) -> torch.Tensor:
    """Indices of one training batch. With `balance`, every class present in `labels` fills an
    equal share of the batch (the remainder goes to randomly chosen classes), sampled with
    replacement, so a minority class is oversampled instead of drowned; otherwise uniform."""
    if not balance:
        return torch.randint(len(labels), (batch_size,), generator=rng)
    classes = torch.unique(labels)
    per = torch.full((len(classes),), batch_size // len(classes))
    per[torch.randperm(len(classes), generator=rng)[: batch_size % len(classes)]] += 1
    parts = []
    for c, n in zip(classes, per.tolist()):
        members = torch.nonzero(labels == c).flatten()
        parts.append(members[torch.randint(len(members), (n,), generator=rng)])
    idx = torch.cat(parts)
    return idx[torch.randperm(len(idx), generator=rng)]


# The layout of checkpoint.pt / resume.pt. Raise it when a change makes older files unreadable
# (renamed keys, new required entries), so that loading one says so instead of failing later.
# 2: the compute block (device, precision) is recorded; `versions` no longer holds the device.
CHECKPOINT_FORMAT = 2


def versions() -> dict:
    from importlib.metadata import version  # not `import timm`: that pulls in torchvision (~2 s)

    return {"cfgan": __version__, "torch": str(torch.__version__), "timm": version("timm"),
            "python": platform.python_version()}


def plain(value):
    """Tensors and plain Python values only (what weights_only=True reads back): numpy scalars become
    Python numbers, str subclasses (torch.__version__) become str. State dicts (OrderedDicts of
    tensors, with their version metadata) pass unchanged."""
    if isinstance(value, (torch.Tensor, OrderedDict)) or value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value) if type(value) in (list, tuple) else [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    raise TypeError(f"checkpoint entry of type {type(value).__name__} is not a tensor or plain value")


def read_losses(rows: list[dict]) -> list[dict]:
    """Log rows with their loss tensors read as floats. The loops keep a step's losses on the device
    and read them here, once per validation interval or run, instead of one `.item()` (a device
    sync on a GPU) per term and step."""
    return [{k: float(v) if isinstance(v, torch.Tensor) else v for k, v in r.items()} for r in rows]


def save_checkpoint(path: Path, payload: dict) -> None:
    # Through a file object: torch.save then names the archive's root folder "archive" instead of
    # after the (random) temporary file, so the same payload gives the same bytes on every run.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(plain({**payload, "format": CHECKPOINT_FORMAT}), f)


def save_run(out_dir: Path, payload: dict, log: list[dict], compute) -> None:
    """A finished run: checkpoint.pt (state dicts, the params it read, versions, the device and
    precision it trained at) and log.csv."""
    import pandas as pd
    from ..io import write_csv
    save_checkpoint(out_dir / "checkpoint.pt", {**payload, "versions": versions(), "compute": compute.describe()})
    write_csv(out_dir / "log.csv", pd.DataFrame(log))


def as_checkpoint(source) -> dict:
    """A loaded checkpoint dict, or load it from a path (so callers read a file once)."""
    return source if isinstance(source, dict) else load_checkpoint(source)


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint safely; every way it can be wrong is a UserError naming the file."""
    from ..errors import UserError
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found (train the run first)")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: checkpoint is empty (0 bytes): a copy or download was cut short; fetch it again or retrain")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        why = next((line.strip() for line in str(exc).splitlines() if "GLOBAL" in line), "") or _calls_in_pickle(path)
        if not why:
            raise UserError(f"{path}: not a readable checkpoint (truncated or corrupt: "
                            f"{str(exc).strip().splitlines()[-1][:200]}); fetch it again or retrain") from None
        raise UserError(f"{path}: refused to load: the file holds objects other than tensors and plain values, and "
                        f"unpickling them could run code ({why}). cfgan checkpoints never do; use only checkpoints "
                        f"written by `cfgan train` from a source you trust") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, IndexError, ... for damaged files
        raise UserError(f"{path}: not a readable checkpoint (truncated or corrupt: {exc.__class__.__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); fetch it again or retrain") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"{path}: not a cfgan checkpoint (holds a {type(ckpt).__name__}, expected a mapping)")
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        made_by = (ckpt.get("versions") or {}).get("cfgan", "an unknown version")
        raise UserError(f"{path}: checkpoint format {ckpt.get('format', '(none)')} written by cfgan {made_by}; this cfgan "
                        f"{__version__} reads format {CHECKPOINT_FORMAT} only: retrain the run with this version")
    ckpt["file"] = str(path)  # so that later errors (rebuilding the model) can name it
    return ckpt


def _calls_in_pickle(path: Path) -> str:
    """For a plain pickle (not torch's zip format): whether it imports objects (what a code-running
    payload needs), read with pickletools, which parses opcodes and executes nothing."""
    import pickletools
    try:
        with open(path, "rb") as f:
            ops = [op.name for op, _, _ in pickletools.genops(f)]
    except Exception:
        return ""  # not a pickle at all: damaged, not malicious
    calls = sorted({o for o in ops if o in ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE")})
    return f"the pickle uses {', '.join(calls)}" if calls else ""


class StaleEntry(KeyError):
    """A key a loader asked of a checkpoint that lacks it (an older or another layout)."""


class _Tracked(dict):
    """A checkpoint's dict (its top level, summary, params and their sub-dicts, not its state dicts)
    whose missing keys raise StaleEntry: `rebuilds` then knows the checkpoint lacked them, not the code."""

    def __missing__(self, key):
        raise StaleEntry(key)


def _tracked(value):
    if type(value) is dict:  # state dicts (OrderedDicts of tensors) stay as they are
        return _Tracked({k: _tracked(v) for k, v in value.items()})
    return value


def _stale_state_dict(exc: BaseException) -> bool:
    """load_state_dict's error for missing / unexpected keys or a size mismatch."""
    return isinstance(exc, RuntimeError) and str(exc).startswith("Error(s) in loading state_dict")


def rebuilds(loader):
    """Decorate a `load_*(source, dev)` function: a checkpoint whose models this code cannot rebuild
    is a UserError naming the file. Only what a stale checkpoint raises is read so: load_state_dict's
    missing / unexpected keys or size mismatch (another architecture or size), a key the loader asks
    of the checkpoint (its summary, params, state entries) that the file lacks, and a model name the
    registry lacks. Every other error (a bug in a constructor, the device running out of memory)
    propagates as it is."""
    from ..models.registry import UnknownModel

    @functools.wraps(loader)
    def wrapper(source, *args, **kwargs):
        from ..errors import UserError
        original = as_checkpoint(source)
        ckpt = _tracked(original)  # the loader reads this copy; the caller gets its own dict back
        try:
            result = loader(ckpt, *args, **kwargs)
        except (StaleEntry, UnknownModel, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and not _stale_state_dict(exc):
                raise
            summary = ckpt.get("summary", {}) if isinstance(ckpt.get("summary"), dict) else {}
            what = ", ".join(f"{k} {summary[k]}" for k in ("run", "image_size") if k in summary) or "no summary"
            made_by = (ckpt.get("versions") or {}).get("cfgan", "an unknown version")
            kind = "KeyError" if isinstance(exc, KeyError) else exc.__class__.__name__
            detail = " ".join(line.strip() for line in str(exc).splitlines())[:300] or "no detail"
            if isinstance(exc, StaleEntry):
                detail = f"the checkpoint has no entry {exc.args[0]!r}"
            raise UserError(f"{ckpt.get('file', '(checkpoint)')}: cannot rebuild its models ({what}; written by cfgan "
                            f"{made_by}, this is {__version__}): it was made for another architecture or version "
                            f"than this code builds ({kind}: {detail})") from None
        return tuple(original if part is ckpt else part for part in result) if isinstance(result, tuple) else result
    return wrapper
