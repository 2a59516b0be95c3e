"""Exact top-k selection (per matrix and over all matrices together) and the straight-through
estimator used by the score-based pruners.

Selections are exact in count: ties at the cut are broken by position, so "keep k" keeps k.
``torch.topk``/``torch.kthvalue`` are used throughout (``torch.quantile`` is slower and refuses
inputs above 2**24 elements, i.e. a global selection over BERT-base).
"""

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
    if k <= 0:
        return torch.zeros_like(scores)
    if k <= n // 2:
        out = torch.zeros_like(flat)
        out[torch.topk(flat, k, sorted=False).indices] = 1
    else:
        out = torch.ones_like(flat)
        out[torch.topk(flat, n - k, largest=False, sorted=False).indices] = 0
    return out.view_as(scores)


def kth_largest(values: list[torch.Tensor], k: int) -> torch.Tensor:
    """The ``k``-th largest entry (1-based) over all tensors of ``values`` together (0-d tensor)."""
    flat = torch.cat([v.detach().reshape(-1).float() for v in values])
    n = flat.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k={k} outside 1..{n}")
    # kthvalue counts from the smallest; the k-th largest is the (n-k+1)-th smallest.
    return torch.kthvalue(flat, n - k + 1).values


def global_topk_masks(importances: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """0/1 masks keeping exactly ``k`` entries over all matrices together: every entry above the
    global k-th largest importance, plus as many entries equal to it as needed (in matrix order).

    One ``kthvalue`` over the concatenation, then one comparison per matrix.
    """
    total = sum(v.numel() for v in importances.values())
    if k >= total:
        return {name: torch.ones_like(v) for name, v in importances.items()}
    if k <= 0:
        return {name: torch.zeros_like(v) for name, v in importances.items()}
    cut = kth_largest(list(importances.values()), k)
    keep = {name: v.detach() > cut.to(v.dtype) for name, v in importances.items()}
    missing = k - sum(int(m.sum()) for m in keep.values())
    for name, v in importances.items():
        if missing <= 0:
            break
        ties = (v.detach().reshape(-1) == cut.to(v.dtype)).nonzero().squeeze(1)[:missing]
        keep[name].view(-1)[ties] = True
        missing -= ties.numel()
    return {name: m.to(importances[name].dtype) for name, m in keep.items()}


class StraightThrough(torch.autograd.Function):
    """Returns a precomputed mask in the forward pass and passes the gradient to the scores
    unchanged in the backward pass, so ``dL/dS = dL/dM = dL/dW' * W`` for ``W' = W * M``."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        return grad, None
