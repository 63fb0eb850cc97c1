"""What every training run shares: seeding, devices, checkpoints that say what made them."""

from __future__ import annotations

import platform
import random
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


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def prepare(model: torch.nn.Module, dev: torch.device) -> torch.nn.Module:
    """Move to the device; channels-last on a GPU, where convolutions run faster in it."""
    model = model.to(dev)
    return model.to(memory_format=torch.channels_last) if dev.type == "cuda" else model


def autocast(dev: torch.device):
    """bf16 autocast on a GPU, plain fp32 on the CPU."""
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")


def versions() -> dict:
    import timm
    return {"cfgan": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "python": platform.python_version(), "device": str(device())}


def save_checkpoint(path: Path, payload: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def save_run(out_dir: Path, payload: dict, log: list[dict]) -> None:
    """A finished run: checkpoint.pt (state dicts, the params it read, versions) and log.csv."""
    import pandas as pd
    from ..io import write_csv
    save_checkpoint(out_dir / "checkpoint.pt", {**payload, "versions": versions()})
    write_csv(out_dir / "log.csv", pd.DataFrame(log))


def as_checkpoint(source) -> dict:
    """A loaded checkpoint dict, or load it from a path (so callers read a file once)."""
    return source if isinstance(source, dict) else load_checkpoint(source)


def load_checkpoint(path: Path) -> dict:
    from ..errors import UserError
    if not Path(path).is_file():
        raise UserError(f"{path}: checkpoint not found (train the run first)")
    return torch.load(path, map_location="cpu", weights_only=False)
