"""Exact top-k masks and the straight-through estimator used by the score-based pruners."""

from __future__ import annotations

import math

import torch


def kept_count(fraction: float, numel: int) -> int:
    """Entries kept when keeping ``fraction`` of ``numel`` (round half up, at least one)."""
    return max(1, min(numel, math.floor(fraction * numel + 0.5)))


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A 0/1 mask (dtype of ``scores``) with exactly ``k`` ones at the largest ``scores``.

    ``torch.topk`` picks exactly k entries even among ties; selecting the smaller side (keep k or
    drop n-k) keeps the top-k call cheap at both ends of the schedule.
    """
    n = scores.numel()
    if k >= n:
        return torch.ones_like(scores)
    flat = scores.detach().reshape(-1)
    if k <= n // 2:
        out = torch.zeros_like(flat)
        out[torch.topk(flat, k, sorted=False).indices] = 1
    else:
        out = torch.ones_like(flat)
        out[torch.topk(flat, n - k, largest=False, sorted=False).indices] = 0
    return out.view_as(scores)


class StraightThrough(torch.autograd.Function):
    """Returns a precomputed mask in the forward pass and passes the gradient to the scores
    unchanged in the backward pass, so ``dL/dS = dL/dM = dL/dW' * W`` for ``W' = W * M``."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        return grad, None
