"""The mask search of the Fisher pruner: which heads and neurons to keep under a budget, and the
within-layer rearrangement that improves the choice.

**Search.** Removing head or neuron ``i`` costs, to second order, about ``F_ii / 2`` of loss, where
``F_ii = sum_e (dL_e/dm_i)^2`` is the diagonal empirical Fisher of its mask. Every head costs the
same resources (weights, FLOPs) wherever it is, and so does every neuron, so the knapsack
"keep the most Fisher importance within the budgets" has an exact solution by enumeration (Kwon et
al. 2022, ``search.py``): for each number ``h`` of heads kept (the ``h`` most important over all
layers), keep as many of the most important neurons as every budget still allows, and take the
``h`` with the largest total importance. Layers thus end with different numbers of heads and neurons.

A latency budget (:class:`LayerwiseBudget`) is not of that kind: a layer's attention or FFN block
costs a measured, piecewise-linear function of how many heads or neurons *it* keeps
(:mod:`.latency`). The pair ``(h, n)`` still fixes every layer's counts (the ``h`` most important
heads and ``n`` most important neurons land where they land), so the same enumeration runs with
each budget's cost of the first ``h`` heads and ``n`` neurons added up layer by layer; for each
``h`` the most neurons within every budget are found by bisection, since no cost decreases as
``n`` grows. The answer is the best such pair: exact over the pairs, though with non-uniform costs a
mask outside them (a less important head where it costs less) could keep more importance.

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

#: Relative slack of a float budget (a latency): costs added up in different orders differ in their
#: last bits, and a mask exactly at the limit must not be refused for it.
FLOAT_SLACK = 1e-9


@dataclass(frozen=True)
class Budget:
    """A resource every head and every neuron uses the same amount of, wherever it is (weights,
    FLOPs): what one head and one neuron each cost, and the most the kept ones may use."""

    name: str
    head_cost: int
    neuron_cost: int
    limit: int

    def running_costs(self, head_layers: torch.Tensor, neuron_layers: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """What keeping the first 0, 1, ... ranked heads, and neurons, uses (``*_layers``: the layer
        of each ranked head or neuron, unused here)."""
        return (torch.arange(head_layers.numel() + 1, dtype=torch.int64) * self.head_cost,
                torch.arange(neuron_layers.numel() + 1, dtype=torch.int64) * self.neuron_cost)


@dataclass(frozen=True)
class LayerwiseBudget:
    """A resource whose use depends on how many heads and neurons each layer keeps (a latency):
    ``head_costs[k]`` is one layer's attention keeping ``k`` heads, ``neuron_costs[k]`` its FFN
    keeping ``k`` neurons (both nondecreasing in ``k``); ``limit`` is what the kept heads and neurons
    may add to the model with none."""

    name: str
    head_costs: tuple[float, ...]
    neuron_costs: tuple[float, ...]
    limit: float

    def running_costs(self, head_layers: torch.Tensor, neuron_layers: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """What keeping the first 0, 1, ... ranked heads, and neurons, adds, layer by layer."""
        return _running(head_layers, self.head_costs), _running(neuron_layers, self.neuron_costs)


def _running(layers: torch.Tensor, per_count: tuple[float, ...]) -> torch.Tensor:
    """``out[i]``: sum over layers of ``per_count[kept in the layer among the first i] - per_count[0]``."""
    if layers.numel() == 0:
        return torch.zeros(1, dtype=torch.float64)
    layer_ids = torch.unique(layers, return_inverse=True)[1]
    onehot = torch.nn.functional.one_hot(layer_ids, int(layer_ids.max()) + 1)
    counts = torch.cat([onehot.new_zeros(1, onehot.shape[1]), torch.cumsum(onehot, 0)])
    if int(counts[-1].max()) >= len(per_count):
        raise ValueError(f"a layer has {int(counts[-1].max())} groups; the costs cover {len(per_count) - 1}")
    costs = torch.tensor(per_count, dtype=torch.float64)
    return (costs[counts] - costs[0]).sum(1)


@dataclass(frozen=True)
class SearchResult:
    """Kept heads and neurons (over all layers) and the Fisher importance they keep."""

    heads: int
    neurons: int
    importance: float


def ranked(importance: torch.Tensor) -> torch.Tensor:
    """Positions of ``importance`` from the most important (ties by position, as :func:`top_masks`)."""
    return torch.sort(importance.reshape(-1).double(), descending=True, stable=True).indices


def search_counts(head_importance: torch.Tensor, neuron_importance: torch.Tensor,
                  budgets: list[Budget | LayerwiseBudget], head_layers: torch.Tensor | None = None,
                  neuron_layers: torch.Tensor | None = None) -> SearchResult:
    """How many heads and neurons (the most important first) to keep: the pair within every budget
    with the largest total importance. ``*_layers`` give the layer of each entry (needed by a
    :class:`LayerwiseBudget`; one layer when omitted). Raises ``ValueError`` when no pair (not even
    nothing) fits."""
    head_importance, neuron_importance = head_importance.reshape(-1), neuron_importance.reshape(-1)
    head_order, neuron_order = ranked(head_importance), ranked(neuron_importance)
    heads, neurons = head_importance.double()[head_order], neuron_importance.double()[neuron_order]
    head_sum = torch.cat([heads.new_zeros(1), torch.cumsum(heads, 0)])
    neuron_sum = torch.cat([neurons.new_zeros(1), torch.cumsum(neurons, 0)])
    head_layers = torch.zeros_like(head_order) if head_layers is None else head_layers.reshape(-1)[head_order]
    neuron_layers = torch.zeros_like(neuron_order) if neuron_layers is None else neuron_layers.reshape(-1)[neuron_order]
    running = [(b.running_costs(head_layers, neuron_layers), b.limit) for b in budgets]
    best: SearchResult | None = None
    for h in range(heads.numel() + 1):
        n = neurons.numel()
        for (head_cost, neuron_cost), limit in running:
            left = torch.tensor(limit, dtype=neuron_cost.dtype) - head_cost[h]
            if left.is_floating_point():  # a cost summed in another order may round a hair above the limit
                left = left + FLOAT_SLACK * max(1.0, abs(float(limit)))
            # the running costs never decrease: the neurons that fit are a prefix
            n = min(n, int(torch.searchsorted(neuron_cost, left.reshape(1), right=True)) - 1)
        if n < 0:  # not even this many heads alone fit, nor will more
            break
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
    keep[ranked(flat)[:count]] = True
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
