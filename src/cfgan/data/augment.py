"""The paper's augmentation (section 4.1), batched on the training device: random crop and
resize, small rotations (and 90-degree turns), flips, slight brightness and hue changes, blur.

Geometry is one affine warp per sample (crop-and-resize, rotation and flips together), so a
batch costs one grid_sample; an identity warp reproduces the input exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# RGB <-> YIQ: hue is a rotation of the (I, Q) chroma plane.
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)


def _uniform(n, low, high, gen):
    return low + (high - low) * torch.rand(n, generator=gen)


def augment(x: torch.Tensor, cfg: dict, gen: torch.Generator, masks: torch.Tensor | None = None):
    """x: B x 3 x H x W in [0, 1] (any device). Random numbers come from `gen` (CPU) for repeatability.

    With `masks` (B x H x W, bool) the same geometry is applied to them (nearest neighbour) and
    (x, warped masks) is returned, so a caller can tell which crops still show their defect."""
    b = x.shape[0]
    side = _uniform(b, *cfg["scale"], gen).sqrt()  # crop side as a fraction of the image
    angle = _uniform(b, -cfg["rotation"], cfg["rotation"], gen) * math.pi / 180
    if cfg["rot90"]:
        angle = angle + torch.randint(0, 4, (b,), generator=gen) * (math.pi / 2)
    fx = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0) if cfg["hflip"] else torch.ones(b)
    fy = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0) if cfg["vflip"] else torch.ones(b)
    tx, ty = (_uniform(b, -1, 1, gen) * (1 - side) for _ in range(2))
    cos, sin = angle.cos() * side, angle.sin() * side
    theta = torch.stack([torch.stack([cos * fx, -sin * fy, tx], 1), torch.stack([sin * fx, cos * fy, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if masks is not None:
        masks = F.grid_sample(masks[:, None].to(x.device, x.dtype), grid, mode="nearest", padding_mode="reflection",
                              align_corners=False)[:, 0] > 0.5

    brightness = _uniform(b, 1 - cfg["brightness"], 1 + cfg["brightness"], gen).to(x.device, x.dtype)
    hue = _uniform(b, -cfg["hue"], cfg["hue"], gen) * 2 * math.pi
    rot = torch.zeros(b, 3, 3)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = hue.cos(), -hue.sin(), hue.sin(), hue.cos()
    color = (_YIQ2RGB @ rot @ _RGB2YIQ).to(x.device, x.dtype) * brightness.view(b, 1, 1)
    x = torch.einsum("bij,bjhw->bihw", color, x)

    blur = torch.rand(b, generator=gen) < cfg["blur_p"]
    if blur.any():  # asked of the CPU draw: on a GPU, asking the device copy would wait for the device
        blur = blur.to(x.device)
        k = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype)
        kernel = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3)
        blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel, groups=3)
        x = torch.where(blur.view(b, 1, 1, 1), blurred, x)
    x = x.clamp(0, 1)
    return x if masks is None else (x, masks)
