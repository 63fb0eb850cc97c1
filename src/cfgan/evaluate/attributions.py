"""Model-agnostic attribution maps of a classifier's damaged score, through Captum (BSD-3): the rows of
Table 5 that explain D, or its plain twin, the way one would explain any black box, beside the
counterfactual map and Grad-CAM. Not in the paper (the seed documents' third explainer compares a crop
with its adversarial sample through superpixel explanations; DESIGN.md, "The explainers side by side").

What is explained (`evaluate.saliency.attributions.target`): `margin`, the damaged-minus-undamaged logit
(default; the ranking table 2's AUROC reads, blind to D's fake logit), or `damaged`, the damaged logit alone
(what Grad-CAM explains). D's logits are (real-undamaged, real-damaged, fake), the twin's (undamaged,
damaged): columns 0 and 1 mean the same in both.

- `occlusion`: a `window` x `window` patch, slid by `stride`, replaced by the baseline; a pixel's value
  is the mean drop of the score over the patches that cover it (Zeiler and Fergus; Captum `Occlusion`).
- `integrated_gradients`: the path integral of the score's gradient from the baseline to the crop, times
  (crop - baseline), `n_steps` Gauss-Legendre points (Sundararajan et al.; Captum `IntegratedGradients`).
  For a score linear in the pixels, exactly (x - baseline) x weight.
- `kernelshap_slic` / `lime_slic`: the crop cut into SLIC superpixels (scikit-image, `n_segments`,
  `compactness`), `n_samples` coalitions of superpixels kept or replaced by the baseline, and a weighted
  linear model of the score on them (KernelSHAP's Shapley kernel, or LIME's exponential kernel and lasso,
  Captum's defaults); each pixel carries its superpixel's weight. The superpixel explainer Anchors would
  run over the same segments; docs/method.md says why these stand in for it.

The baseline (`attributions.baseline`): `mean`, each crop's mean colour (a featureless crop of the same
brightness), or `zero`, black, which hides dark defects: a crack near black differs little from it.

Maps are N x H x W fp32 in two forms, chosen on val like every map's form: `positive`, a pixel's
attribution (integrated gradients: summed over the colour channels) clipped at 0, the evidence for
"damaged", and `abs`, its magnitude.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

ATTRIBUTIONS = ("occlusion", "integrated_gradients", "kernelshap_slic", "lime_slic")
TARGETS = ("margin", "damaged")
BASELINES = ("mean", "zero")
FORMS = ("positive", "abs")


class DamagedScore(nn.Module):
    """One fp32 number per crop of a classifier whose logits 0 and 1 are undamaged and damaged."""

    def __init__(self, model: nn.Module, target: str = "margin"):
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"evaluate.saliency.attributions.target must be one of {TARGETS}, not {target!r}")
        self.model, self.target = model, target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x).float()
        return logits[:, 1] - logits[:, 0] if self.target == "margin" else logits[:, 1]


def baseline_of(x: torch.Tensor, kind: str) -> torch.Tensor:
    """The reference image the attributions start from, one per crop (see the module's docstring)."""
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.mean((2, 3), keepdim=True).expand_as(x).contiguous()
    raise ValueError(f"evaluate.saliency.attributions.baseline must be one of {BASELINES}, not {kind!r}")


def as_forms(attr: torch.Tensor, forms, per_channel: bool = True) -> dict[str, np.ndarray]:
    """N x 3 x H x W attributions -> {form: N x H x W fp32 maps}: a pixel's value is the sum over its channels
    where each channel has its own attribution (`per_channel`, integrated gradients), the value every channel
    holds where a feature spans them (occlusion's windows and the superpixels cover all three channels)."""
    attr = attr.detach().float()
    signed = (attr.sum(1) if per_channel else attr.mean(1)).cpu()
    out = {"positive": signed.clamp(min=0), "abs": signed.abs()}
    unknown = set(forms) - set(out)
    if unknown:
        raise ValueError(f"attribution map forms are {FORMS}, not {sorted(unknown)}")
    return {f: out[f].numpy() for f in forms}


def occlusion(score: nn.Module, x: torch.Tensor, baseline: torch.Tensor, window: int, stride: int,
              batch_size: int) -> torch.Tensor:
    from captum.attr import Occlusion
    window = min(window, *x.shape[2:])
    stride = max(1, min(stride, window))
    return Occlusion(score).attribute(x, sliding_window_shapes=(x.shape[1], window, window), strides=(x.shape[1], stride, stride),
                                      baselines=baseline, perturbations_per_eval=max(1, batch_size // len(x)))


def integrated_gradients(score: nn.Module, x: torch.Tensor, baseline: torch.Tensor, n_steps: int,
                         batch_size: int) -> torch.Tensor:
    from captum.attr import IntegratedGradients
    return IntegratedGradients(score).attribute(x, baselines=baseline, n_steps=n_steps,
                                                internal_batch_size=max(batch_size, len(x)))


def superpixels(image: torch.Tensor, n_segments: int, compactness: float) -> torch.Tensor:
    """SLIC segments of one 3 x H x W crop in [0, 1] as a 1 x 3 x H x W Captum feature mask, ids 0..K-1."""
    from skimage.segmentation import slic
    hwc = image.detach().float().permute(1, 2, 0).cpu().numpy().astype(np.float64)
    seg = slic(hwc, n_segments=n_segments, compactness=compactness, start_label=0, channel_axis=-1)
    ids = np.unique(seg, return_inverse=True)[1].reshape(seg.shape)
    return torch.from_numpy(ids).long().to(image.device)[None, None].expand(1, image.shape[0], *seg.shape)


def superpixel_attribution(score: nn.Module, x: torch.Tensor, baseline: torch.Tensor, explainer: str, n_segments: int,
                           compactness: float, n_samples: int, batch_size: int, seed: int) -> torch.Tensor:
    """KernelSHAP or LIME over each crop's SLIC superpixels, one crop at a time (each has its own segments);
    the coalitions drawn from a seeded generator (crop i: seed + i), the global one left as it was."""
    from captum.attr import KernelShap, Lime
    method = (KernelShap if explainer == "kernelshap" else Lime)(score)
    out = []
    for i in range(len(x)):
        mask = superpixels(x[i], n_segments, compactness)
        if int(mask.max()) == 0:  # one segment (a flat crop): its Shapley value is the whole change, on every pixel
            with torch.no_grad():
                change = score(x[i:i + 1]) - score(baseline[i:i + 1])
            out.append(change.view(1, 1, 1, 1).expand_as(x[i:i + 1]))
            continue
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(seed + i)
            out.append(method.attribute(x[i:i + 1], baselines=baseline[i:i + 1], feature_mask=mask, n_samples=n_samples,
                                        perturbations_per_eval=max(1, min(n_samples, batch_size))))
    return torch.cat(out)


def attribution_maps(model: nn.Module, split, method: str, forms, cfg: dict, batch_size: int, device="cpu",
                     seed: int = 0) -> dict[str, np.ndarray]:
    """{form: N x H x W maps} of `method` (one of ATTRIBUTIONS) explaining `model`'s damaged score on every
    crop of `split`, in batches; `cfg` is `evaluate.saliency.attributions`."""
    if method not in ATTRIBUTIONS:
        raise ValueError(f"evaluate.saliency.attributions.methods: {method!r} is not one of {ATTRIBUTIONS}")
    score = DamagedScore(model, cfg.get("target", "margin")).eval()
    kind = cfg.get("baseline", "mean")
    parts = {f: [] for f in forms}
    for start in range(0, len(split), batch_size):
        x, _ = split.batch(torch.arange(start, min(start + batch_size, len(split))), device)
        base = baseline_of(x, kind)
        if method == "occlusion":
            o = cfg["occlusion"]
            attr = occlusion(score, x, base, o["window"], o["stride"], batch_size)
        elif method == "integrated_gradients":
            attr = integrated_gradients(score, x, base, cfg["integrated_gradients"]["n_steps"], batch_size)
        else:
            sp = cfg["superpixels"]
            attr = superpixel_attribution(score, x, base, method.removesuffix("_slic"), sp["n_segments"],
                                          sp["compactness"], sp["n_samples"], batch_size, seed + start)
        for f, m in as_forms(attr, forms, per_channel=method == "integrated_gradients").items():
            parts[f].append(m)
    return {f: np.concatenate(p) for f, p in parts.items()}
