"""Figures 4-5, Table 5: saliency |x - G(x)| and Grad-CAM on the same D, scored by IoU.

A saliency map becomes a binary mask by thresholding at t x (the map's maximum); a supervised
segmenter's probability map at t itself. t is chosen from params' candidates to maximise the
mean IoU on the validation split's damaged crops and then applied unchanged to the test split.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from ..models import cam_target_layer
from .metrics import iou


def smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of N x H x W maps (reflect-padded); sigma 0 leaves them as they are.

    |x - G(x)| also holds pixel-level texture changes; a blur of a pixel or two suppresses that
    speckle against the connected change along a defect (Grad-CAM maps are smooth by construction)."""
    if sigma <= 0:
        return maps
    from torchvision.transforms.functional import gaussian_blur
    k = 2 * int(np.ceil(3 * sigma)) + 1
    return gaussian_blur(maps.unsqueeze(1), [k, k], [sigma, sigma]).squeeze(1)


def counterfactual_maps(g, split, batch_size: int, seed: int, device="cpu", sigma: float = 0.0) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    maps = []
    with torch.no_grad():
        for start in range(0, len(split), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(split)))
            x, _ = split.batch(idx, device)
            z = torch.randn(len(idx), g.noise_dim, generator=gen).to(device)
            x_cf, _ = g(x, z)
            maps.append(smooth((x - x_cf).abs().mean(1), sigma).cpu().numpy())
    return np.concatenate(maps)


def gradcam_maps(d, split, batch_size: int, device="cpu") -> np.ndarray:
    """Grad-CAM of D's 'damaged' logit at its last convolutional stage (pytorch-grad-cam)."""
    maps = []
    layer, reshape = cam_target_layer(d)
    with GradCAM(model=d, target_layers=[layer], reshape_transform=reshape) as cam:
        for start in range(0, len(split), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(split)))
            x, _ = split.batch(idx, device)
            maps.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(1)] * len(idx)))
    return np.concatenate(maps)


def binarize(maps: np.ndarray, t: float, relative: bool = True) -> np.ndarray:
    if not relative:
        return maps >= t
    peak = maps.reshape(len(maps), -1).max(1).reshape(-1, 1, 1)
    return (maps >= t * peak) & (peak > 0)


def per_image_iou(maps: np.ndarray, masks: np.ndarray, t: float, relative: bool = True) -> np.ndarray:
    pred = binarize(maps, t, relative)
    return np.array([iou(p, m) for p, m in zip(pred, masks)])


def choose_threshold(maps: np.ndarray, masks: np.ndarray, candidates: list[float], relative: bool = True) -> float:
    scores = [per_image_iou(maps, masks, t, relative).mean() for t in candidates]
    return float(candidates[int(np.argmax(scores))])
