"""When an explanation is out of its depth: an image unlike the run's training data.

Two signals of the trained pair, both from the paper: D's fake probability p_fake (its
uncertainty score: real images of the training domain get a low one), and the disagreement
between D's class prediction and G's auxiliary head (trained on the same task, they agree on
familiar images). Each gets a threshold from the run's own val split, so that a val crop is
flagged by either signal with probability about `alpha` in total (alpha / 2 each), and the
false-alarm rate on unseen crops of the same domain is about alpha as well.

The calibration is computed once, at the end of training, and stored in the checkpoint's
summary (`summary["ood"]`), so a shared checkpoint carries it without its data.
"""

from __future__ import annotations

import numpy as np
import torch

ALPHA = 0.05  # the chosen false-alarm rate on in-domain crops
SIGNALS = {"p_fake": "D's fake probability", "disagreement": "|P(damaged) by D - by G's head|"}


def signals(d_probs: torch.Tensor, g_probs: torch.Tensor) -> dict[str, np.ndarray]:
    """Per image: p_fake, and |D's P(damaged) - G-head's P(damaged)| (D over its two real logits)."""
    d_real = d_probs[:, :2] / d_probs[:, :2].sum(1, keepdim=True)
    return {"p_fake": d_probs[:, 2].double().numpy(), "disagreement": (d_real[:, 1] - g_probs[:, 1]).abs().double().numpy()}


def calibrate(d_probs: torch.Tensor, g_probs: torch.Tensor, alpha: float = ALPHA) -> dict:
    """Thresholds: the (1 - alpha/k) quantile of each of the k signals on the val crops."""
    values = signals(d_probs, g_probs)
    q = 1 - alpha / len(values)
    return {"alpha": alpha, "quantile": q, "n_val": len(d_probs),
            "thresholds": {name: float(np.quantile(v, q, method="higher")) for name, v in values.items()}}


@torch.no_grad()
def calibrate_run(g, d, best: dict, val, batch_size: int, seed: int, dev) -> dict:
    """The calibration of a finished run: its selected G and D (`best` state dicts) on its val split."""
    from .evaluate.predict import predict
    g.load_state_dict(best["g"]); d.load_state_dict(best["d"])
    g.eval(); d.eval()
    out = predict(val, d=d, g=g, batch_size=batch_size, device=dev, seed=seed)
    return calibrate(out["d_probs"], out["g_probs"])


def assess(values: dict[str, float], calibration: dict | None) -> tuple[bool | None, list[str]]:
    """(out of distribution?, reasons). None when the checkpoint carries no calibration."""
    if not calibration:
        return None, ["this checkpoint carries no val calibration (trained by an older cfgan): cannot tell"]
    reasons = [f"{SIGNALS[name]} {values[name]:.3f} > {t:.3f}, the {100 * calibration['quantile']:.1f}th percentile "
               f"on the run's {calibration['n_val']} val crops" for name, t in calibration["thresholds"].items()
               if values[name] > t]
    return bool(reasons), reasons
