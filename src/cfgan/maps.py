"""How a counterfactual pair (x, G(x)) becomes a saliency map: the map forms, their blur, the maps
of a whole split, and how well the best form matches a split's masks.

Below the training layer, because training reads them too (`train.val_maps`' curve); the saliency
step (evaluate/saliency.py) scores these maps on test.
"""

from __future__ import annotations

import numpy as np
import torch

from .metrics import choose_form, choose_threshold


def smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of N x H x W maps (reflect-padded); sigma 0 leaves them as they are."""
    if sigma <= 0:
        return maps
    from torchvision.transforms.functional import gaussian_blur
    half = min(int(np.ceil(3 * sigma)), min(maps.shape[-2:]) - 1)  # reflect padding must stay inside the crop
    k = 2 * half + 1
    return gaussian_blur(maps.unsqueeze(1), [k, k], [sigma, sigma]).squeeze(1)


# How the pair (x, x') becomes one map per crop. `abs` is the paper's |x - x'| averaged over the
# colour channels; the others read the grey-level difference with a sign, as `local_contrast`
# does: `dark` where x is darker than its counterfactual (G brightened a dark defect away),
# `bright` the reverse, `both` either. A `-decast` suffix first takes out each crop's mean
# difference per channel: the uniform colour cast G adds costs L1 like a defect removed, and on
# CrackForest val it was more than half of |x - x'| (benchmarks/diagnose_maps.py). A `-keep` suffix
# (a G with `generator.cnn_unet.keep_mode` only) reads the counterfactual against G(x, keep) instead of
# x: what G draws in both modes, whatever the class, cancels.
COUNTERFACTUAL_FORMS = tuple(f"{p}{c}{k}" for k in ("", "-keep") for c in ("", "-decast") for p in ("abs", "dark", "bright", "both"))


def counterfactual_form(x: torch.Tensor, x_cf: torch.Tensor, form: str, x_keep: torch.Tensor | None = None) -> torch.Tensor:
    """N x H x W fp32 maps of N x 3 x H x W crops and their counterfactuals, in one of COUNTERFACTUAL_FORMS
    (`x_keep`, G(x, keep) with the counterfactual's noise, for the `-keep` forms)."""
    if form not in COUNTERFACTUAL_FORMS:
        raise ValueError(f"evaluate.saliency.counterfactual_forms: {form!r} is not one of {COUNTERFACTUAL_FORMS}")
    if form.endswith("-keep") and x_keep is None:
        raise ValueError(f"map form {form!r} reads G(x, keep): it needs a generator with keep_mode")
    diff = (x_keep if form.endswith("-keep") else x).float() - x_cf.float()
    form = form.removesuffix("-keep")
    if form.endswith("-decast"):
        diff = diff - diff.mean((2, 3), keepdim=True)
    polarity = form.removesuffix("-decast")
    if polarity == "abs":
        return diff.abs().mean(1)
    grey = diff.mean(1)
    return {"dark": -grey, "bright": grey, "both": grey.abs()}[polarity]


def counterfactual_maps(g, split, batch_size: int, seed: int, device="cpu", sigma: float = 0.0,
                        forms=("abs",)) -> dict[str, np.ndarray]:
    """{form: N x H x W maps} of G's counterfactuals (one noise draw per crop, seeded), blurred at `sigma`."""
    gen = torch.Generator().manual_seed(seed)
    maps = {form: [] for form in forms}
    with torch.no_grad():
        for start in range(0, len(split), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(split)))
            x, _ = split.batch(idx, device)
            z = torch.randn(len(idx), g.noise_dim, generator=gen).to(device)
            x_cf, _ = g(x, z)
            x_keep = g(x, z, keep=True)[0] if any(f.endswith("-keep") for f in forms) else None
            for form in forms:
                maps[form].append(smooth(counterfactual_form(x, x_cf, form, x_keep), sigma).cpu().numpy())  # maps in fp32
    return {form: np.concatenate(parts) for form, parts in maps.items()}


def best_form_iou(g, split, forms, quantiles, batch_size: int, seed: int, device="cpu", sigma: float = 0.0) -> tuple[str, float]:
    """(form, mean IoU) of the best of `forms` on a masked split's damaged crops under the one-threshold
    rule, the threshold chosen on these same crops: how well G's maps match the masks, as the saliency
    step chooses its form on val (`train.val_maps`' curve)."""
    damaged = torch.nonzero(split.labels == 1).flatten()
    if split.masks is None or len(damaged) == 0:
        raise ValueError("best_form_iou needs a split with masks and at least one damaged crop")
    crops = split.subset(damaged)
    maps = counterfactual_maps(g, crops, batch_size, seed, device, sigma, forms)
    masks = crops.masks.numpy()
    form = choose_form(maps, masks, quantiles)
    return form, choose_threshold(maps[form], masks, quantiles)[1]
