"""The training batches: balanced draws of augmented crops, relabelled where the augmentation
moved a defect out of view. One builder for every classifier that trains on labelled crops (the
GAN's D and G, the plain twin, the non-adversarial UNet classifier), so that each comparison of
table 2 and figure 3 is between models that saw the same kind of batches."""

from __future__ import annotations

import torch

from ..data.augment import augment
from .common import batch_indices


def training_batch(train, idx, cfg: dict, rng, dev, targets: torch.Tensor | None = None):
    """An augmented batch (`cfg["augment"]`). Where crops have masks, a damaged crop whose defect the
    random crop or rotation moved entirely out of view is relabelled undamaged (it no longer shows one).
    `targets`: per-crop targets of the whole split to return instead of its binary labels (the plain
    twin's class ids on a multi-class data set); a crop that lost its defect gets 0 (undamaged) there too."""
    x, y = train.batch(idx, dev)
    if targets is not None:
        y = targets[idx].to(y.device)
    if train.masks is None:
        return augment(x, cfg["augment"], rng), y
    x, masks = augment(x, cfg["augment"], rng, masks=train.masks[idx])
    return x, torch.where(masks.flatten(1).any(1).to(y.device), y, torch.zeros_like(y))


def draw_batch(train, batch_size: int, balance: bool, cfg: dict, rng, dev, targets: torch.Tensor | None = None):
    """`training_batch` of a fresh draw: `batch_size` crops, with `balance` every class of `targets`
    (default: the binary labels) in equal numbers (`batch_indices`)."""
    idx = batch_indices(train.labels if targets is None else targets, batch_size, rng, balance)
    return training_batch(train, idx, cfg, rng, dev, targets)
