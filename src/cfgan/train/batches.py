"""The training batches: balanced draws of augmented crops, relabelled where the augmentation
moved a defect out of view."""

from __future__ import annotations

import torch

from ..data.augment import augment


def training_batch(train, idx, cfg: dict, rng, dev):
    """An augmented batch. Where crops have masks, a damaged crop whose defect the random crop
    or rotation moved entirely out of view is relabelled undamaged (it no longer shows one)."""
    x, y = train.batch(idx, dev)
    if train.masks is None:
        return augment(x, cfg["augment"], rng), y
    x, masks = augment(x, cfg["augment"], rng, masks=train.masks[idx])
    return x, torch.where(masks.flatten(1).any(1).to(y.device), y, torch.zeros_like(y))
