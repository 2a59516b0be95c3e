"""The mask search of the Fisher pruner: which heads and neurons to keep under a budget, and the
within-layer rearrangement that improves the choice.

**Search.** Removing head or neuron ``i`` costs, to second order, about ``F_ii / 2`` of loss, where
``F_ii = sum_e (dL_e/dm_i)^2`` is the diagonal empirical Fisher of its mask. Every head costs the
same resources (weights, FLOPs) wherever it is, and so does every neuron, so the knapsack
"keep the most Fisher importance within the budgets" has an exact solution by enumeration (Kwon et
al. 2022, ``search.py``): for each number ``h`` of heads kept (the ``h`` most important over all
layers), keep as many of the most important neurons as every budget still allows, and take the
``h`` with the largest total importance. Layers thus end with different numbers of heads and neurons.

**Rearrangement.** The diagonal ignores that two pruned heads of one layer may compensate or
compound each other. Within a layer the loss increase of pruning the set ``P`` is, to second order,
``1_P^T F 1_P`` with ``F`` that layer's block of the empirical Fisher matrix. Starting from the
search's ``P``, each kept group in turn (least important first) joins ``P`` and then the member of
``P`` whose removal leaves the smallest objective leaves it: the count per layer (so every budget)
is unchanged and, since the newcomer may be the one to leave, the objective never increases.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Budget:
    """One resource: what a head and a neuron each cost, and the most the kept ones may use."""

    name: str
    head_cost: int
    neuron_cost: int
    limit: int


@dataclass(frozen=True)
class SearchResult:
    """Kept heads and neurons (over all layers) and the Fisher importance they keep."""

    heads: int
    neurons: int
    importance: float


def search_counts(head_importance: torch.Tensor, neuron_importance: torch.Tensor,
                  budgets: list[Budget]) -> SearchResult:
    """How many heads and neurons (the most important first) to keep: the pair within every budget
    with the largest total importance. Raises ``ValueError`` when no pair (not even nothing) fits."""
    heads = torch.sort(head_importance.reshape(-1).double(), descending=True).values
    neurons = torch.sort(neuron_importance.reshape(-1).double(), descending=True).values
    head_sum = torch.cat([heads.new_zeros(1), torch.cumsum(heads, 0)])
    neuron_sum = torch.cat([neurons.new_zeros(1), torch.cumsum(neurons, 0)])
    best: SearchResult | None = None
    for h in range(heads.numel() + 1):
        left = [b.limit - h * b.head_cost for b in budgets]
        if min(left) < 0:
            break
        n = min([neurons.numel()] + [rest // b.neuron_cost for rest, b in zip(left, budgets)])
        total = float(head_sum[h] + neuron_sum[n])
        if best is None or total > best.importance:
            best = SearchResult(h, n, total)
    if best is None:
        raise ValueError("no mask fits the budgets")
    return best


def top_masks(importance: dict[str, torch.Tensor], count: int) -> dict[str, torch.Tensor]:
    """0/1 masks keeping the ``count`` most important entries over all groupings (ties by position)."""
    names = list(importance)
    flat = torch.cat([importance[n].reshape(-1).double() for n in names])
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[torch.sort(flat, descending=True, stable=True).indices[:count]] = True
    out, start = {}, 0
    for name in names:
        size = importance[name].numel()
        out[name] = keep[start:start + size].clone()
        start += size
    return out


def pruned_objective(fisher: torch.Tensor, keep: torch.Tensor) -> float:
    """``1_P^T F 1_P`` for the pruned set ``P`` (where ``keep`` is False)."""
    p = (~keep).double()
    return float(p @ fisher.double() @ p)


def rearrange(fisher: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """A mask with as many kept entries as ``keep`` whose :func:`pruned_objective` is at most
    ``keep``'s, by greedy swaps (``fisher``: the layer's ``(groups, groups)`` Fisher block)."""
    f = fisher.double()
    diag = torch.diagonal(f)
    pruned = torch.nonzero(~keep).reshape(-1).tolist()
    kept = torch.nonzero(keep).reshape(-1)
    if not pruned or kept.numel() == 0:
        return keep.clone()
    candidates = kept[torch.sort(diag[kept], stable=True).indices].tolist()
    row_sum = f[:, pruned].sum(1)  # F 1_P
    for c in candidates:
        members = torch.tensor(pruned + [c])
        with_c = row_sum + f[:, c]
        # objective of (P + c) minus one member r, up to the constant obj(P + c)
        drop = -2 * with_c[members] + diag[members]
        r = int(torch.argmin(drop))
        if drop[r] >= drop[-1]:  # removing the newcomer is as good: keep the current set
            continue
        out = pruned[r]
        pruned[r] = c
        row_sum = with_c - f[:, out]
    result = torch.ones_like(keep)
    result[pruned] = False
    return result
