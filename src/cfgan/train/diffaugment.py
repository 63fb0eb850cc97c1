"""`train.diffaugment` (not in the paper; absent = off): differentiable augmentation of every image
D sees while it trains, real and generated alike (DiffAugment, Zhao et al., NeurIPS 2020).

The data augmentation of `train.augment` reaches only the real crops; D can then tell a real crop
from a counterfactual by what the augmentation leaves on it. Here the same random transforms hit
both, in D's update and in G's (where gradients flow through them to G), so a difference that
survives is one of content. Validation, selection and every evaluation see D without them.

Policies (Zhao et al.'s, with their ranges):
  color: per image, brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5);
  translation: per image, a shift of up to 1/8 of the side, zero-filled;
  cutout: per image, a zero square of half the side at a random place. It can hide the defect of a
    damaged crop while the label stays "damaged": off unless asked for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

POLICIES = ("color", "translation", "cutout")


def diff_augment(x: torch.Tensor, policies: list[str]) -> torch.Tensor:
    """x: B x C x H x W. Random draws from torch's global generator on x's device (seeded by the run,
    saved by its resume state), one draw per image."""
    for policy in policies:
        x = _TRANSFORMS[policy](x)
    return x


def _color(x):
    b = x.shape[0]
    x = x + (torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)
    mean = x.mean(1, keepdim=True)
    x = (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


def _translation(x, ratio: float = 0.125):
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp(0, h + 1)  # +1: the zero border
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, (1, 1, 1, 1))
    index = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded.permute(0, 2, 3, 1)[index, rows, cols].permute(0, 3, 1, 2).contiguous()


def _cutout(x, ratio: float = 0.5):
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h, (b, 1, 1), device=x.device) - ch // 2   # the square's centre anywhere in the image
    left = torch.randint(0, w, (b, 1, 1), device=x.device) - cw // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


_TRANSFORMS = {"color": _color, "translation": _translation, "cutout": _cutout}


class AugmentedD(nn.Module):
    """D behind `diff_augment`: what the adversarial losses score while D and G train."""

    def __init__(self, d: nn.Module, policies: list[str]):
        super().__init__()
        unknown = sorted(set(policies) - set(POLICIES))
        if unknown:
            raise ValueError(f"train.diffaugment: unknown policies {unknown}; known: {list(POLICIES)}")
        self.d, self.policies = d, list(policies)

    def forward(self, x):
        return self.d(diff_augment(x, self.policies))
