"""Discriminator-classifiers (3 logits: real-undamaged, real-damaged, fake) and their plain
2-class twins. Same constructors, only `num_classes` differs.

ResNet3 is ours (timm's ResNet cannot stop after three stages); the deeper ResNets come from
timm, with ImageNet weights only from a local file named in params.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .layout import keep_layout


class StridedConv1x1(nn.Conv2d):
    """A 1x1 convolution with a stride, computed as the same convolution, unstrided, of the subsampled
    input: the same numbers to the bit (forward and backward, fp32 and bf16, either memory layout), and
    the same parameters and state-dict keys as `nn.Conv2d(cin, cout, 1, stride)`. Why: on CPUs with
    AVX-512, torch 2.14's channels-last kernel for a strided 1x1 convolution corrupts the heap in
    backward when the input has 6, 8 or 12 channels and the batch 3 or 5 crops (a crash, `double free
    or corruption`), as a ResNet3 of width 8 meets in its second stage (docs/trust.md).
    The subsampling is a 1x1 average pool with the stride, not a slice: the same values, and its gradient
    keeps a channels-last input's layout (a slice's comes back channels-first, and the mixed layouts
    slowed every element-wise backward op of D that followed it: models/layout.py)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__(cin, cout, 1, 1, bias=False)
        self.step = stride

    def forward(self, x):
        return super().forward(F.avg_pool2d(x, 1, self.step))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.skip = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            StridedConv1x1(cin, cout, stride), nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


class ResNet3(nn.Module):
    """ResNet with three stages of two basic blocks (widths w, 2w, 4w), then a global pool and a linear head.

    `pool` (discriminator.resnet3.pool): `avg` (the usual head) or `max`. Not from the paper: a defect that
    covers a few pixels of a crop moves an average of the last stage's features by its share of the crop,
    while a max keeps its strongest response whatever the defect's size (the pooling of weakly supervised
    detectors of small objects)."""

    POOLS = {"avg": nn.AdaptiveAvgPool2d, "max": nn.AdaptiveMaxPool2d}

    def __init__(self, num_classes: int, width: int = 64, in_channels: int = 3, pool: str = "avg"):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        stages, cin = [], width
        for i, cout in enumerate([width, width * 2, width * 4]):
            stages.append(nn.Sequential(BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(self.POOLS[pool](1), nn.Flatten(), nn.Linear(cin, num_classes))

    def forward(self, x):
        # keep_layout: the global pool's backward returns a channels-first gradient (models/layout.py)
        return self.head(keep_layout(self.stages(self.stem(x))))


def timm_backbone(name: str, num_classes: int, weights: str | None, key: str, **kwargs) -> nn.Module:
    """A timm model; ImageNet weights only from a local file (no hub download here)."""
    import timm  # here, not at the top: timm pulls in torchvision, ~2 s per process that ResNet3 runs never need
    if weights is None:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    if not Path(weights).is_file():
        raise UserError(f"discriminator.weights.{key}: weight file {weights} not found "
                        f"(download timm's '{name}' weights and put the file there, or remove the key)")
    return timm.create_model(name, pretrained=True, num_classes=num_classes,
                             pretrained_cfg_overlay={"file": str(weights)}, **kwargs)


class Hybrid(nn.Module):
    """ResNet3 and Swin Tiny as one model: the mean of their logits (an ensemble trained jointly)."""

    def __init__(self, resnet: nn.Module, swin: nn.Module):
        super().__init__()
        self.resnet, self.swin = resnet, swin

    def forward(self, x):
        return (self.resnet(x) + self.swin(x)) / 2
