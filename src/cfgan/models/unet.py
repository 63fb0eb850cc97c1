"""CNN UNet generator: x -> (counterfactual, class logits).

- Noise (appendix A.1, eq. 7): one z ~ N(0, I) of size `noise_dim` per image is linearly
  projected to `noise_channels` x H x W at every upsampling layer, concatenated to the
  feature map, and a 1x1 convolution projects back to the layer's width.
- Dropout as in pix2pix on the deepest upsampling blocks.
- Auxiliary head: weighted-average pooling of every upsampling block, concatenated, then a
  small fully connected network predicts the input's class.
- `upsample` and `padding` (not from the paper): pix2pix's transposed convolutions and zero padding
  leave stripe and border patterns in |x - G(x)|, which then dominate the saliency map;
  nearest-neighbour resize + 3x3 convolution and reflection padding avoid both (Odena et al. 2016,
  "Deconvolution and Checkerboard Artifacts").
- The image branch predicts a residual: x_cf = clip(x + tanh(r), 0, 1). Identity is then the
  easy start, which suits the L1 term's push towards minimal changes (a choice of ours).
- `output: mask_infill` (beyond the paper, off by default): x_cf = (1 - m) x + m f, a one-channel
  mask m in [0, 1] (starting near 0: G starts near the identity) and an infill f; G can then only
  change the pixels it masks, and `train.loss.mask_area` / `mask_tv` price the mask's area and
  ragged edges (such masks saturate without a prior: GANimation's issues 9 and 112).
- `keep_mode` (beyond the paper, off by default): G takes one more input plane, 0 for "flip" (the
  counterfactual, as in the paper; the default of every call) and 1 for "keep", which
  `train.loss.identity` trains to the identity (Fixed-Point GAN, Siddiquee et al. ICCV 2019; COIN's
  identity condition, Shvetsov et al. 2024). The `-keep` map forms then read G(x, keep) - G(x, flip):
  an artefact G draws whatever it is asked cancels in the map.
"""

from __future__ import annotations

import torch
from torch import nn

from .layout import is_channels_last, keep_layout
from .pooling import WeightedAvgPool


def conv_block(cin: int, cout: int, padding: str = "zeros") -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, padding_mode=padding, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, padding_mode=padding, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True),
    )


def upsampler(cin: int, cout: int, mode: str, padding: str) -> nn.Module:
    if mode == "transpose":
        return nn.ConvTranspose2d(cin, cout, 2, stride=2)
    if mode == "resize":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1, padding_mode=padding))
    raise ValueError(f"upsample must be 'transpose' or 'resize', not {mode!r}")


class NoiseInjection(nn.Module):
    """Project z to c x H x W, concatenate to the features, project back (eq. 7)."""

    def __init__(self, noise_dim: int, channels: int, size: int, noise_channels: int):
        super().__init__()
        self.size, self.noise_channels = size, noise_channels
        self.project = nn.Linear(noise_dim, noise_channels * size * size)
        self.back = nn.Conv2d(channels + noise_channels, channels, 1)

    def forward(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        n = self.project(z).view(-1, self.noise_channels, self.size, self.size)
        # a one-channel plane is contiguous in both layouts, and then cat returns channels-first: ask for h's
        layout = torch.channels_last if is_channels_last(h) else torch.contiguous_format
        return self.back(torch.cat([h, n.to(h.dtype)], dim=1).contiguous(memory_format=layout))


class UpBlock(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int, size: int, noise_dim: int, noise_channels: int, dropout: float,
                 upsample: str = "transpose", padding: str = "zeros"):
        super().__init__()
        self.up = upsampler(cin, cout, upsample, padding)
        self.noise = NoiseInjection(noise_dim, cout + cskip, size, noise_channels)
        self.conv = conv_block(cout + cskip, cout, padding)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, h, skip, z):
        # keep_layout: cat's backward hands each part a slice of the gradient, in no layout (models/layout.py)
        h = torch.cat([keep_layout(self.up(h)), keep_layout(skip)], dim=1)
        return self.drop(self.conv(self.noise(h, z)))


class CNNUNet(nn.Module):
    def __init__(self, image_size: int, width: int = 64, depth: int = 4, noise_dim: int = 64,
                 noise_channels: int = 1, dropout: float = 0.5, num_classes: int = 2, in_channels: int = 3,
                 upsample: str = "transpose", padding: str = "zeros", output: str = "residual", keep_mode: bool = False):
        super().__init__()
        if output not in ("residual", "mask_infill"):
            raise ValueError(f"generator.cnn_unet.output must be 'residual' or 'mask_infill', not {output!r}")
        if image_size % (2 ** depth):
            raise ValueError(f"image_size {image_size} must be divisible by 2**depth = {2 ** depth}")
        self.noise_dim = noise_dim
        chans = [min(width * 2 ** i, width * 8) for i in range(depth + 1)]
        self.keep_mode = keep_mode
        self.stem = conv_block(in_channels + int(keep_mode), chans[0], padding)
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), conv_block(chans[i], chans[i + 1], padding)) for i in range(depth)
        )
        self.up = nn.ModuleList()
        self.pools = nn.ModuleList()
        pooled = 32
        for j, i in enumerate(reversed(range(depth))):  # i: resolution level the block returns to
            size = image_size // 2 ** i
            # pix2pix: dropout in the first (deepest) half of the decoder only
            self.up.append(UpBlock(chans[i + 1], chans[i], chans[i], size, noise_dim, noise_channels,
                                   dropout if j < (depth + 1) // 2 else 0.0, upsample, padding))
            self.pools.append(WeightedAvgPool(chans[i], pooled))
        self.head = nn.Sequential(nn.Linear(pooled * depth, 64), nn.GELU(), nn.Linear(64, num_classes))
        self.output = output
        self.to_image = nn.Conv2d(chans[0], in_channels, 1)
        nn.init.zeros_(self.to_image.weight)  # start as the identity: G(x) = x
        nn.init.zeros_(self.to_image.bias)
        if output == "mask_infill":
            self.to_mask = nn.Conv2d(chans[0], 1, 1)
            nn.init.zeros_(self.to_mask.weight)
            nn.init.constant_(self.to_mask.bias, -4.0)  # m = sigmoid(-4) = 0.018 everywhere at the start
        self.last_mask = None  # mask_infill: the mask of the last forward (for its losses)
        self.last_keep = None  # keep_mode in training: G(x, keep) of the last forward (for train.loss.identity)

    def decode(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The last decoder feature map (NCHW, full resolution) and the class logits."""
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        h = skips.pop()
        pooled = []
        for block, pool in zip(self.up, self.pools):
            h = block(h, skips.pop(), z)
            pooled.append(pool(h))
        return h, self.head(torch.cat(pooled, dim=1))

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None, keep: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(counterfactual, class logits); `keep`: G's "keep" mode (a `keep_mode` G only).

        A keep-mode G in training runs both modes in one batch (the same crops and noise twice) and
        keeps the keep half in `last_keep` for `train.loss.identity`: batch norm would erase a mode
        plane that is constant over the batch, and its running statistics then hold both modes, as
        evaluation (one mode per call) reads them."""
        if z is None:
            z = torch.randn(x.shape[0], self.noise_dim, device=x.device, dtype=x.dtype)
        if keep and not self.keep_mode:
            raise ValueError("G's keep mode (train.loss.identity, the '-keep' map forms) needs generator.cnn_unet.keep_mode: true")
        if not self.keep_mode:
            return self._output(x, *self.decode(x, z))
        if not self.training:
            return self._output(x, *self.decode(torch.cat([x, torch.full_like(x[:, :1], float(keep))], dim=1), z))
        n, twice = len(x), torch.cat([x, x])
        plane = torch.cat([torch.zeros_like(x[:, :1]), torch.ones_like(x[:, :1])])
        both, logits = self._output(twice, *self.decode(torch.cat([twice, plane], dim=1), torch.cat([z, z])))
        self.last_keep = both[n:]
        return (both[n:], logits[n:]) if keep else (both[:n], logits[:n])

    def _output(self, x: torch.Tensor, h: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.output == "mask_infill":
            m = torch.sigmoid(self.to_mask(h).float())
            fill = (x + torch.tanh(self.to_image(h).float())).clamp(0, 1)  # the infill, as a residual of x
            self.last_mask = m
            return (1 - m) * x + m * fill, logits
        x_cf = (x + torch.tanh(self.to_image(h))).clamp(0, 1)
        return x_cf, logits
