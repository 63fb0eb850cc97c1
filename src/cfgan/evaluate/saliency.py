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

Beside these, scores that need no threshold (pixel AUROC, AUPRO, ODS and OIS) of the same test maps:
evaluate/threshold_free.py.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from ..maps import smooth
from ..metrics import binarize, iou

TOLERANCE_PX = 2           # f1_tol2: crack-detection benchmarks' distance tolerance


GRADCAM_SCALINGS = ("absolute", "per_crop")


def gradcam_maps(d, split, batch_size: int, device="cpu", scaling: str = "per_crop", layers_of=None) -> np.ndarray:
    """Grad-CAM of D's 'damaged' logit at its last convolutional stage (pytorch-grad-cam).

    `scaling`: `per_crop` (default, as `evaluate.saliency.gradcam_scalings` defaults) is
    pytorch-grad-cam's own output, min-max scaled per crop, which puts a maximum of 1 in every crop,
    the faint ones included (the relative threshold the rule exists to avoid); `absolute` keeps the
    CAM's own values (ReLU'd, resized to the crop), so that the one-threshold rule compares crops
    on one scale, as it does every other map. `layers_of`: the network whose last stage is hooked when `d`
    wraps it (the multi-class twin seen through two of its logits)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from ..models import cam_target_layer
    if scaling not in GRADCAM_SCALINGS:
        raise ValueError(f"evaluate.saliency.gradcam_scaling must be one of {GRADCAM_SCALINGS}, not {scaling!r}")
    maps = []
    layer, reshape = cam_target_layer(d if layers_of is None else layers_of)

    def to_fp32(t):  # under bf16 autocast the hooked activations and gradients are bf16, which numpy lacks
        return (reshape(t) if reshape else t).float()
    with (GradCAM if scaling == "per_crop" else _absolute_gradcam())(model=d, target_layers=[layer], reshape_transform=to_fp32) as cam:
        for start in range(0, len(split), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(split)))
            x, _ = split.batch(idx, device)
            maps.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(1)] * len(idx)))
    return np.concatenate(maps).astype(np.float32)


def _absolute_gradcam():
    """Built on first use, so pytorch-grad-cam (and cv2) load only where Grad-CAM is drawn."""
    from pytorch_grad_cam import GradCAM

    class AbsoluteGradCAM(GradCAM):
        """pytorch-grad-cam's Grad-CAM (its hooks, weights and weighted sum) without the per-crop
        min-max scaling: ReLU, then a bilinear resize to the crop, as the library does."""

        def compute_cam_per_layer(self, input_tensor, targets, eigen_smooth):
            import cv2
            width, height = self.get_target_width_height(input_tensor)
            out = []
            for layer, acts, grads in zip(self.target_layers, self.activations_and_grads.activations,
                                          self.activations_and_grads.gradients):
                cam = np.maximum(self.get_cam_image(input_tensor, layer, targets, acts.cpu().numpy(), grads.cpu().numpy(),
                                                    eigen_smooth), 0)
                out.append(np.stack([cv2.resize(np.float32(c), (width, height)) for c in cam])[:, None])
            return out

        def aggregate_multi_layers(self, cam_per_target_layer):
            return np.mean(np.concatenate(cam_per_target_layer, axis=1), axis=1)
    return AbsoluteGradCAM


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

def tolerance_disk(tol: int = TOLERANCE_PX) -> np.ndarray:
    """The offsets within `tol` px (Euclidean distance <= tol, what a distance transform would give):
    the footprint of every tolerant score (`tolerant_f1`; ODS and OIS in evaluate/threshold_free.py)."""
    yy, xx = np.mgrid[-tol:tol + 1, -tol:tol + 1]
    return yy ** 2 + xx ** 2 <= tol ** 2


def tolerant_f1(pred: np.ndarray, target: np.ndarray, tol: int = TOLERANCE_PX) -> float:
    """F1 of one crop's mask with a distance tolerance: a predicted pixel counts as correct when a
    true pixel lies within `tol` px, a true pixel as found when a predicted one does (thin cracks
    make plain IoU fragile to one-pixel offsets). 1.0 when both masks are empty."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    if not pred.any() and not target.any():
        return 1.0
    if not pred.any() or not target.any():
        return 0.0
    disk = tolerance_disk(tol)
    precision = float((pred & ndimage.binary_dilation(target, disk)).sum() / pred.sum())
    recall = float((target & ndimage.binary_dilation(pred, disk)).sum() / target.sum())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def score_test(maps: np.ndarray, masks: np.ndarray, t: float) -> dict[str, np.ndarray]:
    """Per-crop IoU, f1_tol2 and the fraction of pixels selected."""
    pred = binarize(maps, t)
    return {"iou": np.array([iou(p, m) for p, m in zip(pred, masks)]),
            "f1_tol2": np.array([tolerant_f1(p, m) for p, m in zip(pred, masks)]),
            "coverage": pred.reshape(len(pred), -1).mean(1)}
