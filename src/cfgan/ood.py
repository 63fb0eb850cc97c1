"""When an explanation is out of its depth: an image unlike the run's training data.

Three signals of the trained pair. Two are the paper's: D's fake probability p_fake (its
uncertainty score) and the disagreement between D's class prediction and G's auxiliary head
(trained on the same task, they agree on familiar images). Measured on the tiny run, these two
alone flag almost no photo of another domain (benchmarks/README.md): a small D is confidently
wrong far from its data. So the third is where D's features sit: the distance of D's
penultimate features from the training crops' (per-feature standardised, i.e. a diagonal
Mahalanobis distance, as in Lee et al. 2018, "A simple unified framework for detecting
out-of-distribution samples"), fitted on the train split.

Each signal gets a threshold from the run's own val split, so that a val crop is flagged by any
of the k signals with probability about `alpha` (alpha / k each): the false-alarm rate on unseen
crops of the same domain is then about alpha too. The calibration is computed once, at the end
of training, and stored in the checkpoint's summary (`summary["ood"]`), so a shared checkpoint
carries it without its data.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .inference import real_class_probs

ALPHA = 0.05  # the chosen false-alarm rate on in-domain crops
SIGNALS = {"p_fake": "D's fake probability", "disagreement": "|P(damaged) by D - by G's head|",
           "feature_distance": "distance of D's features from the training crops'",
           "colour_distance": "distance of the image's colour statistics from the training crops'"}
# the distance signals: which per-image vectors of outputs() they standardise against the train crops
DISTANCES = {"feature_distance": "features", "colour_distance": "colour"}


@torch.no_grad()
def outputs(g, d, x: torch.Tensor, seed: int = 0, batch_size: int = 128, dev=None) -> dict[str, torch.Tensor]:
    """D's 3-class logits, G-head's class probabilities and D's penultimate features (the
    input of its last linear layer), for images x (floats in [0, 1], or uint8), with a fixed noise seed."""
    last = [m for m in d.modules() if isinstance(m, nn.Linear)][-1]
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, list] = {"d_logits": [], "g_probs": [], "features": [], "colour": []}
    hook = last.register_forward_hook(lambda m, inputs, o: out["features"].append(inputs[0].float().flatten(1).cpu()))
    try:
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(dev or x.device)
            xb = xb.float() / 255 if xb.dtype == torch.uint8 else xb
            z = torch.randn(len(xb), g.noise_dim, generator=gen).to(xb.device)
            out["g_probs"].append(g(xb, z)[1].float().softmax(1).cpu())
            out["d_logits"].append(d(xb).float().cpu())
            out["colour"].append(torch.cat([xb.mean((2, 3)), xb.std((2, 3))], 1).float().cpu())  # per-channel mean, sd
    finally:
        hook.remove()
    return {k: torch.cat(v) for k, v in out.items()}


def signals(o: dict[str, torch.Tensor], calibration: dict | None) -> dict[str, np.ndarray]:
    """Per image: p_fake; |D's P(damaged) - G-head's P(damaged)| (D over its two real logits); and,
    given a calibration, the RMS standardised distance of D's features from the train crops' mean."""
    g_probs = o["g_probs"]
    d_real = real_class_probs(o["d_logits"])
    values = {"p_fake": o["d_logits"].softmax(1)[:, 2].double().numpy(), "disagreement": (d_real[:, 1] - g_probs[:, 1]).abs().double().numpy()}
    for name, key in DISTANCES.items():
        if calibration and f"{key}_mean" in calibration:
            mean, std = torch.as_tensor(calibration[f"{key}_mean"]), torch.as_tensor(calibration[f"{key}_std"])
            values[name] = ((o[key] - mean) / std).pow(2).mean(1).sqrt().double().numpy()
    return values


def calibrate(train: dict[str, torch.Tensor], val: dict[str, torch.Tensor], alpha: float = ALPHA) -> dict:
    """Feature statistics from the train crops; thresholds: the (1 - alpha/k) quantile of each of
    the k signals on the val crops (outputs() of each)."""
    calibration = {"alpha": alpha, "n_val": len(val["d_logits"]), "n_train": len(train["d_logits"])}
    for key in DISTANCES.values():
        v = train[key]
        calibration[f"{key}_mean"] = v.mean(0)
        calibration[f"{key}_std"] = v.std(0).clamp_min(1e-3 * float(v.std(0).mean()) + 1e-12)  # no division by ~0
    values = signals(val, calibration)
    calibration["quantile"] = q = 1 - alpha / len(values)
    calibration["thresholds"] = {name: float(np.quantile(v, q, method="higher")) for name, v in values.items()}
    return calibration


def calibrate_run(g, d, best: dict, train, val, seed: int, dev) -> dict:
    """The calibration of a finished run: its selected G and D (`best` state dicts) on its train and
    val splits (Split objects, uint8 images)."""
    g.load_state_dict(best["g"]); d.load_state_dict(best["d"])
    g.eval(); d.eval()
    return calibrate(*(outputs(g, d, s.images, seed, dev=dev) for s in (train, val)))


def assess(values: dict[str, float], calibration: dict | None) -> tuple[bool | None, list[str]]:
    """(out of distribution?, reasons). None when the checkpoint carries no calibration."""
    if not calibration:
        return None, ["this checkpoint carries no val calibration (trained by an older cfgan): cannot tell"]
    reasons = [f"{SIGNALS[name]} {values[name]:.3f} > {t:.3f}, the {100 * calibration['quantile']:.1f}th percentile "
               f"on the run's {calibration['n_val']} val crops" for name, t in calibration["thresholds"].items()
               if values[name] > t]
    return bool(reasons), reasons
