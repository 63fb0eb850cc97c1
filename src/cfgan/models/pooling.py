"""Weighted-average pooling with a scoring and a weighting branch (as in MANIQA).

Each spatial position gets a feature score s(h, w) and a positive weight w(h, w); the pooled
vector is sum(s * w) / sum(w). The generator's auxiliary classifier uses one such pool per
upsampling block, so it can attend to the few positions where damage is.
"""

import torch
from torch import nn

from .layout import keep_layout


class WeightedAvgPool(nn.Module):
    def __init__(self, channels: int, out_features: int):
        super().__init__()
        hidden = max(channels // 2, 8)
        self.score = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, out_features, 1))
        self.weight = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, w = self.score(x), self.weight(x) + 1e-6
        # keep_layout: a sum's backward hands on a broadcast gradient, which the channels-last product and
        # convolutions before it would read in two layouts (models/layout.py)
        return keep_layout(s * w).sum(dim=(2, 3)) / keep_layout(w).sum(dim=(2, 3))
