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


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def versions() -> dict:
    import timm
    return {"cfgan": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "python": platform.python_version(), "device": str(device())}


def save_checkpoint(path: Path, payload: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict:
    from ..errors import UserError
    if not Path(path).is_file():
        raise UserError(f"{path}: checkpoint not found (train the run first)")
    return torch.load(path, map_location="cpu", weights_only=False)
