"""Table 4 (appendix A.3): Pearson correlation between D's fake probability and the per-sample
negative log-likelihood of the class prediction (of D, and of G's auxiliary head)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import pearsonr

from ..inference import real_class_probs


def nll(probs: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    p = probs[torch.arange(len(labels)), labels].clamp_min(1e-12)
    return (-p.log()).numpy()


def pearson(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(pearsonr(a, b).statistic)


def fakeness_correlation(d_logits: torch.Tensor, g_probs: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    p_fake = d_logits.softmax(1)[:, 2].numpy()
    d_real = real_class_probs(d_logits)
    return [
        {"model": "D", "metric": "pearson_r", "condition": "p_fake~nll", "value": pearson(p_fake, nll(d_real, labels))},
        {"model": "G", "metric": "pearson_r", "condition": "p_fake~nll", "value": pearson(p_fake, nll(g_probs, labels))},
    ]
