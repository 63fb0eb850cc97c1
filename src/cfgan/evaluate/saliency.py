"""Figures 4-5, Table 5: saliency maps scored against ground-truth masks.

Methods: the counterfactual map |x - G(x)| and Grad-CAM on the same D (GAN runs), a supervised
segmenter's probabilities, and three training-free references that every claim is read
against: `local_contrast` (a blurred grey crop minus a less blurred one: dark or bright thin
structures), `random` (the chance level) and `all_pixels` (the degenerate mask).

One rule for all (`cfgan.metrics.choose_threshold`): a map becomes a mask at one absolute threshold per method, the q-quantile of
that method's pixel values over the val split's damaged crops, with q chosen from params'
candidates to maximise the mean val IoU (ties go to the higher q, i.e. fewer pixels). The
threshold is then applied unchanged to test. A threshold relative to each map's own maximum
would stretch a near-identity G's noise to full scale; a fixed one would favour one method's
value range over another's.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from ..metrics import binarize, iou

TOLERANCE_PX = 2           # f1_tol2: crack-detection benchmarks' distance tolerance


def smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of N x H x W maps (reflect-padded); sigma 0 leaves them as they are."""
    if sigma <= 0:
        return maps
    from torchvision.transforms.functional import gaussian_blur
    half = min(int(np.ceil(3 * sigma)), min(maps.shape[-2:]) - 1)  # reflect padding must stay inside the crop
    k = 2 * half + 1
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
            maps.append(smooth((x - x_cf.float()).abs().mean(1), sigma).cpu().numpy())  # maps in fp32
    return np.concatenate(maps)


def gradcam_maps(d, split, batch_size: int, device="cpu") -> np.ndarray:
    """Grad-CAM of D's 'damaged' logit at its last convolutional stage (pytorch-grad-cam)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from ..models import cam_target_layer
    maps = []
    layer, reshape = cam_target_layer(d)

    def to_fp32(t):  # under bf16 autocast the hooked activations and gradients are bf16, which numpy lacks
        return (reshape(t) if reshape else t).float()
    with GradCAM(model=d, target_layers=[layer], reshape_transform=to_fp32) as cam:
        for start in range(0, len(split), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(split)))
            x, _ = split.batch(idx, device)
            maps.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(1)] * len(idx)))
    return np.concatenate(maps)


# --- training-free references ------------------------------------------------------------------

POLARITIES = ("dark", "bright", "both")


def local_contrast_maps(images: torch.Tensor, sigma_narrow: float, sigma_wide: float, polarity: str) -> np.ndarray:
    """images: N x 3 x H x W uint8. `dark`: how much darker a pixel's neighbourhood (sigma_narrow)
    is than its surroundings (sigma_wide), as a crack on concrete; `bright` the reverse; `both`
    the absolute difference."""
    grey = images.float().mean(1) / 255
    diff = smooth(grey, sigma_wide) - smooth(grey, sigma_narrow)
    out = {"dark": diff, "bright": -diff, "both": diff.abs()}[polarity]
    return out.numpy()


def random_maps(shape: tuple, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def all_pixel_maps(shape: tuple) -> np.ndarray:
    return np.ones(shape, np.float32)


# --- thresholds and scores ---------------------------------------------------------------------

def tolerant_f1(pred: np.ndarray, target: np.ndarray, tol: int = TOLERANCE_PX) -> float:
    """F1 of one crop's mask with a distance tolerance: a predicted pixel counts as correct when a
    true pixel lies within `tol` px, a true pixel as found when a predicted one does (thin cracks
    make plain IoU fragile to one-pixel offsets). 1.0 when both masks are empty."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    if not pred.any() and not target.any():
        return 1.0
    if not pred.any() or not target.any():
        return 0.0
    yy, xx = np.mgrid[-tol:tol + 1, -tol:tol + 1]
    disk = yy ** 2 + xx ** 2 <= tol ** 2
    precision = float((pred & ndimage.binary_dilation(target, disk)).sum() / pred.sum())
    recall = float((target & ndimage.binary_dilation(pred, disk)).sum() / target.sum())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def score_test(maps: np.ndarray, masks: np.ndarray, t: float) -> dict[str, np.ndarray]:
    """Per-crop IoU, f1_tol2 and the fraction of pixels selected."""
    pred = binarize(maps, t)
    return {"iou": np.array([iou(p, m) for p, m in zip(pred, masks)]),
            "f1_tol2": np.array([tolerant_f1(p, m) for p, m in zip(pred, masks)]),
            "coverage": pred.reshape(len(pred), -1).mean(1)}
