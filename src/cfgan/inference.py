"""Batched inference shared by training (validation) and every evaluation step; it sits below both
layers so that training never imports from `evaluate/`."""

from __future__ import annotations

import torch

from .data.datasets import Split


def real_class_probs(d_logits: torch.Tensor) -> torch.Tensor:
    """D's class prediction: softmax over its two real logits (undamaged, damaged). From the logits,
    not by renormalising 3-class probabilities: when D is sure an image is fake both real
    probabilities underflow to 0 in float32, and their ratio is 0/0 (or a tie that argmax breaks
    towards 'undamaged')."""
    return d_logits[:, :2].softmax(dim=1)


@torch.no_grad()
def predict(split: Split, d=None, g=None, batch_size: int = 64, device="cpu", seed: int = 0,
            keep_counterfactuals: bool = False) -> dict[str, torch.Tensor]:
    """D's 3-class logits and probabilities on x (`d_logits`, `d_probs`), G's head probabilities, D on
    G(x) (`d_logits_cf`, `d_probs_cf`), and the mean |x - G(x)| of each image (`change`), with a
    fixed noise seed."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out: dict[str, list] = {"d_logits": [], "g_probs": [], "d_logits_cf": [], "x_cf": [], "change": []}
    for start in range(0, len(split), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(split)))
        x, _ = split.batch(idx, device)
        if d is not None:
            out["d_logits"].append(d(x).float().cpu())
        if g is not None:
            z = torch.randn(len(idx), g.noise_dim, generator=gen).to(device)
            x_cf, logits = g(x, z)
            out["g_probs"].append(logits.float().softmax(1).cpu())
            out["change"].append((x - x_cf).abs().flatten(1).mean(1).float().cpu())
            if d is not None:
                out["d_logits_cf"].append(d(x_cf).float().cpu())
            if keep_counterfactuals:
                out["x_cf"].append(x_cf.cpu())
    result = {k: torch.cat(v) for k, v in out.items() if v}
    for which in ("", "_cf"):
        if f"d_logits{which}" in result:
            result[f"d_probs{which}"] = result[f"d_logits{which}"].softmax(1)
    return result
