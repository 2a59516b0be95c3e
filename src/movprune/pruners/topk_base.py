"""Shared machinery of the top-k pruners (magnitude, movement): a kept count that follows the cubic
schedule, chosen per matrix (``scope: local``) or over all pruned matrices together
(``scope: global``).

The 0/1 masks are computed once per training step in :meth:`TopKPruner.step` (one top-k per matrix,
or one ``kthvalue`` over all of them) and cached on each layer's parametrization; the forward pass
only multiplies ``W * M``. Evaluation reuses the cached mask of the last :meth:`~TopKPruner.step`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from movprune.pruners.base import MaskedWeight, Pruner
from movprune.pruners.config import BasePrunerConfig
from movprune.pruners.grouping import Grouping, weighted_topk_masks
from movprune.pruners.topk import TrackedTopK, global_topk_masks, kept_count


class TopKMask(MaskedWeight):
    """Keeps the ``k`` entries with the largest importance; ``k`` and the 0/1 mask ``hard`` are set
    by the pruner at each step."""

    def __init__(self, numel: int, shape: tuple[int, ...] | None = None):
        super().__init__()
        self.numel = numel
        self.shape = shape
        self.k = numel
        self.hard: torch.Tensor | None = None
        self.selector = TrackedTopK()

    def importance(self, weight: torch.Tensor) -> torch.Tensor:
        """The importance whose top-k is kept (``weight`` is the unmasked weight)."""
        raise NotImplementedError

    def group_importance(self, grouping: Grouping, weights: list[torch.Tensor]) -> torch.Tensor:
        """The importance of each group of ``grouping`` (``weights``: its members' unmasked weights)."""
        return self.importance(weights[0])

    def set_hard(self, hard: torch.Tensor, k: int) -> None:
        """Install the 0/1 mask (keeping ``k`` entries) used by the next forward passes."""
        self.hard = hard.detach()
        self.k = k

    def hard_mask(self, weight: torch.Tensor) -> torch.Tensor:
        """The cached 0/1 mask in ``weight``'s dtype (all ones before the first step)."""
        if self.hard is None:
            return torch.ones(self.shape, dtype=weight.dtype, device=weight.device) if self.shape \
                else torch.ones_like(weight)
        return self.hard.to(weight.dtype)


class TopKPruner(Pruner):
    """Base of the pruners that keep a scheduled fraction of the encoder weights by a top-k."""

    masks: dict[str, TopKMask]

    def __init__(self, config: BasePrunerConfig, total_steps: int):
        super().__init__(config, total_steps)
        self._global_selector = TrackedTopK()

    def kept_counts(self, fraction: float) -> dict[str, int]:
        """Entries to keep per matrix under ``scope: local`` when keeping ``fraction`` of the weights."""
        return {name: kept_count(fraction, m.numel) for name, m in self.masks.items()}

    @torch.no_grad()
    def importances(self) -> dict[str, torch.Tensor]:
        """The current importance of every entry of every pruned matrix."""
        return {name: m.importance(self.original_weight(name)) if self.groupings[name].identity
                else m.group_importance(self.groupings[name], self.member_weights(name))
                for name, m in self.masks.items()}

    @torch.no_grad()
    def step(self, step: int) -> None:
        super().step(step)
        if not self.masks:
            return
        self.fraction = self.scheduled_fraction(step)
        imps = self.importances()
        sizes = {name: self.group_numel(name) for name in self.masks}
        if self.config.scope == "global" and len(set(sizes.values())) > 1:
            # groups of different sizes (hybrid heads and neurons): select by weights, not by count
            total = sum(m.numel * sizes[name] for name, m in self.masks.items())
            hard = weighted_topk_masks(imps, sizes, kept_count(self.fraction, total))
            counts = {name: int(torch.count_nonzero(mask)) for name, mask in hard.items()}
        elif self.config.scope == "global":
            total = sum(m.numel for m in self.masks.values())
            hard = global_topk_masks(imps, kept_count(self.fraction, total), self._global_selector)
            counts = {name: int(torch.count_nonzero(mask)) for name, mask in hard.items()}
        else:
            counts = self.kept_counts(self.fraction)
            hard = {name: self.masks[name].selector.mask(imp, counts[name]) for name, imp in imps.items()}
        for name, mask in hard.items():
            self.masks[name].set_hard(mask, counts[name])

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "global_selector": self._global_selector.state_dict(),
                "selectors": {name: m.selector.state_dict() for name, m in self.masks.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._global_selector.load_state_dict(state["global_selector"])
        for name, m in self.masks.items():
            m.selector.load_state_dict(state["selectors"][name])

    def current_remaining_pct(self) -> float:
        # The kept counts are exact, so this needs no pass over the weights.
        total = sum(m.numel * self.group_numel(n) for n, m in self.masks.items())
        return 100.0 * sum(m.k * self.group_numel(n) for n, m in self.masks.items()) / max(total, 1)

    def make_mask(self, name: str, layer: nn.Linear) -> TopKMask:
        raise NotImplementedError
