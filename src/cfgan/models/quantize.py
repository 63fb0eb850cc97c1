"""Vector quantisation (VQ-VAE) for the Swin UNet's bottleneck: nearest codebook entry,
codebook + commitment loss, straight-through gradient."""

import torch
import torch.nn.functional as F
from torch import nn


class VectorQuantizer(nn.Module):
    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25):
        super().__init__()
        self.codebook = nn.Embedding(codebook_size, dim)
        nn.init.uniform_(self.codebook.weight, -1 / codebook_size, 1 / codebook_size)
        self.beta = beta

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z: (..., dim) -> (quantised z with straight-through gradient, VQ loss)."""
        # fp32 even under bf16 autocast: z^2 - 2ze + e^2 cancels, and bf16's 8 bits of mantissa
        # would pick other codes (autocast runs the product in bf16 even after .float())
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat = z.reshape(-1, z.shape[-1]).float()
            codes = self.codebook.weight.float()
            dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codes.t() + codes.pow(2).sum(1)
        q = self.codebook(dist.argmin(1)).view_as(z).to(z.dtype)
        loss = F.mse_loss(q, z.detach()) + self.beta * F.mse_loss(z, q.detach())
        return z + (q - z).detach(), loss
