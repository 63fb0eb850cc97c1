"""Swin UNet generator (appendix A.1, figure 6): x -> (counterfactual, class logits).

- Encoder: a timm Swin Transformer (features of its four stages, NHWC), ImageNet-pretrained
  from a local weight file when params name one.
- Bottleneck: vector quantisation (codebook, commitment loss, straight-through); its loss is
  left in `self.aux_loss` after each forward, and the training loop adds it (weight `vq`).
- Decoder: per stage, patch expanding (x2), concatenation of the encoder skip, the same noise
  injection as the CNN UNet (z projected to c x H x W, concatenated, projected back), and a
  stage of Swin blocks; pix2pix-style dropout on the deeper half; a final x4 expansion to
  pixels. The auxiliary head pools every decoder stage as in the CNN UNet.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from timm.models.swin_transformer import SwinTransformerStage
from torch import nn

from ..errors import UserError
from .pooling import WeightedAvgPool
from .quantize import VectorQuantizer
from .unet import NoiseInjection


class PatchExpand(nn.Module):
    """NHWC (B, H, W, C) -> (B, s*H, s*W, C_out) by a linear layer and pixel shuffle."""

    def __init__(self, dim: int, out_dim: int, scale: int = 2):
        super().__init__()
        self.scale, self.out_dim = scale, out_dim
        self.expand = nn.Linear(dim, out_dim * scale * scale, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x):
        b, h, w, _ = x.shape
        s = self.scale
        x = self.expand(x).view(b, h, w, s, s, self.out_dim).permute(0, 1, 3, 2, 4, 5)
        return self.norm(x.reshape(b, h * s, w * s, self.out_dim))


def swin_encoder(name: str, image_size: int, window_size: int, weights: str | None) -> nn.Module:
    kwargs = dict(features_only=True, img_size=image_size, window_size=window_size)
    if weights is None:
        return timm.create_model(name, pretrained=False, **kwargs)
    if not Path(weights).is_file():
        raise UserError(f"generator.encoder_weights: {weights} not found (download timm's '{name}' ImageNet weights "
                        f"and put the file there, or set it to null for a random initialisation)")
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(weights)}, **kwargs)


class SwinUNet(nn.Module):
    decodes_nhwc = True  # decode() returns B x H x W x C features (the Segmenter reads this)

    def __init__(self, image_size: int, encoder: str = "swin_tiny_patch4_window7_224", window_size: int = 7,
                 encoder_weights: str | None = None, noise_dim: int = 64, noise_channels: int = 1,
                 dropout: float = 0.5, codebook_size: int = 512, num_classes: int = 2, decoder_depth: int = 2):
        super().__init__()
        if image_size % 32:
            raise ValueError(f"image_size {image_size} must be divisible by 32 for a Swin UNet")
        self.noise_dim = noise_dim
        self.encoder = swin_encoder(encoder, image_size, window_size, encoder_weights)
        dims = self.encoder.feature_info.channels()  # e.g. [96, 192, 384, 768]
        sizes = [image_size // r for r in self.encoder.feature_info.reduction()]
        heads = [max(d // 32, 1) for d in dims]
        self.vq = VectorQuantizer(codebook_size, dims[-1])
        self.up, self.noise, self.fuse, self.stages, self.drops, self.pools = (nn.ModuleList() for _ in range(6))
        pooled = 32
        for j, i in enumerate(reversed(range(len(dims) - 1))):  # i: the encoder stage the block returns to
            self.up.append(PatchExpand(dims[i + 1], dims[i]))
            self.noise.append(NoiseInjection(noise_dim, 2 * dims[i], sizes[i], noise_channels))
            self.fuse.append(nn.Linear(2 * dims[i], dims[i]))
            self.stages.append(SwinTransformerStage(dims[i], dims[i], (sizes[i], sizes[i]), depth=decoder_depth,
                                                    downsample=False, num_heads=heads[i],
                                                    window_size=min(window_size, sizes[i])))
            self.drops.append(nn.Dropout(dropout if j < (len(dims) - 1 + 1) // 2 else 0.0))
            self.pools.append(WeightedAvgPool(dims[i], pooled))
        self.head = nn.Sequential(nn.Linear(pooled * (len(dims) - 1), 64), nn.GELU(), nn.Linear(64, num_classes))
        self.to_pixels = PatchExpand(dims[0], 16, scale=image_size // sizes[0])
        self.to_image = nn.Linear(16, 3)
        nn.init.zeros_(self.to_image.weight)  # start as the identity: G(x) = x
        nn.init.zeros_(self.to_image.bias)
        self.aux_loss = torch.zeros(())

    def decode(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The last decoder feature map (NHWC, at full resolution) and the class logits."""
        skips = self.encoder(x)  # NHWC
        h, self.aux_loss = self.vq(skips.pop())
        pooled = []
        for up, noise, fuse, stage, drop, pool in zip(self.up, self.noise, self.fuse, self.stages, self.drops, self.pools):
            h = torch.cat([up(h), skips.pop()], dim=-1)
            h = noise(h.permute(0, 3, 1, 2), z).permute(0, 2, 3, 1)
            h = drop(stage(fuse(h)))
            pooled.append(pool(h.permute(0, 3, 1, 2)))
        return self.to_pixels(h), self.head(torch.cat(pooled, dim=1))

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if z is None:
            z = torch.randn(x.shape[0], self.noise_dim, device=x.device, dtype=x.dtype)
        h, logits = self.decode(x, z)
        x_cf = (x + torch.tanh(self.to_image(h)).permute(0, 3, 1, 2)).clamp(0, 1)
        return x_cf, logits
