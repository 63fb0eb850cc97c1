"""Gradients in the layout of the tensor they belong to.

Under `compute.channels_last` every activation is channels-last, but a few backward kernels return
their gradient channels-first whatever their input's layout (global average pooling, the sum of a
pooled product). Every element-wise backward op after them (ReLU's, the residual adds, batch norm)
then reads one tensor in each layout, at 20-30x the cost of reading both in one (measured, torch
2.14.1, a 2-core AVX-512 CPU: ReLU backward on 64 x 16 x 48 x 48 bf16, 0.19 ms in one layout,
6-7 ms mixed), and every convolution backward reorders. `keep_layout(x)` is x in forward; in
backward it hands on the gradient in x's layout: the same values, so the same numbers to the bit.
"""

from __future__ import annotations

import torch


def is_channels_last(x: torch.Tensor) -> bool:
    """x is a channels-last feature map (not one that is contiguous in both layouts, as a one-channel plane is)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class _KeepLayout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.channels_last = is_channels_last(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=torch.channels_last) if ctx.channels_last else grad


def keep_layout(x: torch.Tensor) -> torch.Tensor:
    """x; its gradient arrives in x's layout (channels-last stays channels-last)."""
    return _KeepLayout.apply(x) if x.requires_grad else x
