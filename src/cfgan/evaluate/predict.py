"""Batched inference shared by training (validation) and every evaluation step."""

from __future__ import annotations

import torch

from ..data.datasets import Split


def real_class_probs(d_logits: torch.Tensor) -> torch.Tensor:
    """D's class prediction: softmax over its two real logits (undamaged, damaged)."""
    return d_logits[:, :2].softmax(dim=1)


@torch.no_grad()
def predict(split: Split, d=None, g=None, batch_size: int = 64, device="cpu", seed: int = 0,
            keep_counterfactuals: bool = False) -> dict[str, torch.Tensor]:
    """D's 3-class probabilities on x, G's head probabilities, D on G(x), and the mean |x - G(x)| of
    each image (`change`), with a fixed noise seed."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out: dict[str, list] = {"d_probs": [], "g_probs": [], "d_probs_cf": [], "x_cf": [], "change": []}
    for start in range(0, len(split), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(split)))
        x, _ = split.batch(idx, device)
        if d is not None:
            out["d_probs"].append(d(x).float().softmax(1).cpu())
        if g is not None:
            z = torch.randn(len(idx), g.noise_dim, generator=gen).to(device)
            x_cf, logits = g(x, z)
            out["g_probs"].append(logits.float().softmax(1).cpu())
            out["change"].append((x - x_cf).abs().flatten(1).mean(1).float().cpu())
            if d is not None:
                out["d_probs_cf"].append(d(x_cf).float().softmax(1).cpu())
            if keep_counterfactuals:
                out["x_cf"].append(x_cf.cpu())
    return {k: torch.cat(v) for k, v in out.items() if v}
