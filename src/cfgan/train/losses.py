"""The paper's losses (section 3.2). Classes of D: 0 real-undamaged, 1 real-damaged, 2 fake."""

from __future__ import annotations

import torch
import torch.nn.functional as F

FAKE = 2


def discriminator_loss(d, x, y, x_cf, r1: float = 0.0, real_weight: float = 1.0) -> torch.Tensor:
    """Eq. 1: real images to their class, counterfactuals to 'fake'.

    `real_weight` (train.loss.d_real; the paper's 1): the weight of the real crops' term against the
    fake term's 1. Above 1, D's updates lean towards the twin's task (the damaged/undamaged decision)
    and away from telling its own counterfactuals apart.

    `r1` > 0 (train.loss.r1; not in the paper): plus r1 / 2 x the mean over real crops of the squared
    gradient norm, with respect to the crop, of D's loss on it: the R1 penalty of Mescheder et al.
    (ICML 2018), taken of D's three-class cross-entropy of real crops rather than of a realness logit,
    so it flattens D's class decision around the data as well (double backpropagation, Drucker and
    LeCun 1992; Ross and Doshi-Velez 2018: a classifier harder to flip with small perturbations)."""
    # One forward over real and fake together: batch-norm statistics in training then match the
    # running statistics used at evaluation (separate batches made D's eval-mode accuracy collapse).
    real = x.detach().requires_grad_(True) if r1 > 0 else x
    logits = d(torch.cat([real, x_cf.detach()]))
    n = len(x)
    # x 1.0 is exact, forwards and backwards: the paper's weight leaves the paper's bits
    loss = real_weight * F.cross_entropy(logits[:n], y) + F.cross_entropy(logits[n:], torch.full_like(y, FAKE))
    if r1 > 0:
        grad, = torch.autograd.grad(F.cross_entropy(logits[:n].float(), y, reduction="sum"), real, create_graph=True)
        loss = loss + r1 / 2 * grad.float().pow(2).flatten(1).sum(1).mean()
    return loss


def generator_losses(g, d, x, y, x_cf, cls_logits, weights: dict, cycles: int, cycle_weights: list[float]) -> dict:
    """Eq. 2-6. Returns each weighted term and their sum under 'total'.

    adversarial (eq. 2): D must call G(x) the opposite real class;
    auxiliary (eq. 3): G's head predicts x's class;
    l1 (eq. 4): mean |x - G(x)|;
    vq: the Swin UNet's vector-quantisation loss of its last forward (zero for the CNN UNet);
    cycle (eq. 6): nested counterfactuals G^k(x), k = 2 .. 2n, each scored by D against the class
    it should show (y for even k, 1 - y for odd k), half-cycle k weighted by cycle_weights[k-2]
    (the last weight repeats).
    Beyond the paper, each only where its weight is set and > 0 (so the paper's runs log no extra column):
    pixel_cycle: mean |G(G(x)) - x| (Charachon et al., the paper's reference [8]): an artefact G adds
    to every image, whatever its class, survives the round trip and is paid for;
    cast: mean over crops and channels of |mean over pixels of G(x) - x|: a uniform colour shift,
    which the L1 term prices like the defect itself, is paid for a second time;
    mask_area, mask_tv (G with `output: mask_infill`): the mean of its mask m over G(x)'s pixels,
    and m's total variation (mean |m_i - m_j| of neighbours): small, connected masks;
    identity (G with `keep_mode`): mean |G(x, keep) - x|, G asked to keep the crop's class returns the
    crop (Fixed-Point GAN's identity term), so what G draws in both modes is paid for here.
    """
    terms = {
        "adversarial": F.cross_entropy(d(x_cf), 1 - y),
        "auxiliary": F.cross_entropy(cls_logits, y),
        "l1": (x - x_cf).abs().mean(),
        "vq": getattr(g, "aux_loss", x_cf.new_zeros(())),
    }
    mask = getattr(g, "last_mask", None)  # of G(x): read before the cycle's forwards overwrite it
    kept = getattr(g, "last_keep", None)  # G(x, keep), from G(x)'s own forward (keep_mode), likewise
    if weights.get("mask_area", 0) > 0 or weights.get("mask_tv", 0) > 0:
        if mask is None:
            raise ValueError("train.loss.mask_area / mask_tv need a generator with output: mask_infill")
        if weights.get("mask_area", 0) > 0:
            terms["mask_area"] = mask.mean()
        if weights.get("mask_tv", 0) > 0:
            terms["mask_tv"] = (mask[..., 1:, :] - mask[..., :-1, :]).abs().mean() + (mask[..., :, 1:] - mask[..., :, :-1]).abs().mean()
    cycle = x_cf.new_zeros(())
    current, round_trip = x_cf, None
    for k in range(2, 2 * cycles + 1):
        current, _ = g(current)
        round_trip = current if k == 2 else round_trip
        target = y if k % 2 == 0 else 1 - y
        w = cycle_weights[min(k - 2, len(cycle_weights) - 1)] if cycle_weights else 1.0
        cycle = cycle + w * F.cross_entropy(d(current), target)
    terms["cycle"] = cycle
    if weights.get("pixel_cycle", 0) > 0:
        round_trip = g(x_cf)[0] if round_trip is None else round_trip
        terms["pixel_cycle"] = (round_trip - x).abs().mean()
    if weights.get("identity", 0) > 0:
        if kept is None:
            raise ValueError("train.loss.identity needs a generator with keep_mode (generator.cnn_unet.keep_mode: true)")
        terms["identity"] = (kept - x).abs().mean()
    if weights.get("cast", 0) > 0:
        terms["cast"] = (x_cf - x).mean((2, 3)).abs().mean()
    out = {name: weights[name] * value for name, value in terms.items()}
    out["total"] = sum(out.values())
    return out
