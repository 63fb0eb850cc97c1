"""Exponential moving averages of network weights (`train.ema_g`, `train.ema_d`, `baseline.ema`),
beyond the paper (off in its configuration): the averages are what validation, selection and the
checkpoint see; training goes on with the live networks."""

from __future__ import annotations

import copy

import torch


def averaged_copy(net: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of `net` for `update_ema` to average into (`train.ema_g`, `train.ema_d`, `baseline.ema`)."""
    return copy.deepcopy(net).eval().requires_grad_(False)


def update_ema(ema, net, decay: float) -> None:
    """`train.ema_g` / `train.ema_d` / `baseline.ema`: ema <- decay * ema + (1 - decay) * net, parameters
    and batch-norm statistics alike (a network averaged over its last ~1 / (1 - decay) updates; Karras
    et al., Yaz et al. 2019). The averages only watch: training goes on with the live networks."""
    with torch.no_grad():
        for e, p in zip(ema.parameters(), net.parameters()):
            e.lerp_(p, 1 - decay)
        for e, b in zip(ema.buffers(), net.buffers()):
            e.lerp_(b, 1 - decay) if e.is_floating_point() else e.copy_(b)
