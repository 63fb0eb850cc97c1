"""The plain supervised loop that the non-adversarial comparisons share: the plain twin of D
(`baselines.py`) and the UNet classifier of G's head (`unet_classifier.py`). The GAN's batches
(`batches.draw_batch`: the same balance, augmentation and relabelling), Adam, an optional weight
average (`baseline.ema`, as `train.ema_d` averages D), and the step with the best val F1 kept."""

from __future__ import annotations

import copy
from typing import Callable

import torch

from ..progress import progress
from .batches import draw_batch
from .ema import averaged_copy, update_ema


def fit(model: torch.nn.Module, loss_of: Callable, val_f1_of: Callable, train, cfg: dict, train_cfg: dict, val_every: int,
        rng, dev, name: str, targets: torch.Tensor | None = None) -> tuple[dict, list[dict]]:
    """Train `model` for `cfg['steps']` steps on `loss_of(x, y)`; every `val_every` steps (and at the
    last) `val_f1_of(judged)` scores the network validation sees (the average when `cfg['ema']`).
    Returns the best step ({'f1', 'step', 'state'}) and the per-step log (losses still tensors)."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    best, log = {"f1": -1.0, "step": 0, "state": None}, []
    decay = cfg.get("ema", 0)
    judged = averaged_copy(model) if decay > 0 else model
    model.train()
    for step in progress(range(cfg["steps"]), desc=name, unit="step"):
        x, y = draw_batch(train, cfg["batch_size"], cfg.get("balance", False), train_cfg, rng, dev, targets)
        loss = loss_of(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if decay > 0:
            update_ema(judged, model, decay)
        row = {"step": step + 1, "loss": loss.detach()}
        if (step + 1) % val_every == 0 or step + 1 == cfg["steps"]:
            judged.eval()
            f1 = val_f1_of(judged)
            model.train()
            row["val_f1"] = f1
            if f1 > best["f1"]:
                best = {"f1": f1, "step": step + 1, "state": copy.deepcopy(judged.state_dict())}
        log.append(row)
    return best, log
