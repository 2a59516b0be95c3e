"""``magnitude``: gradual magnitude pruning (zeroth order): keep the largest ``|W|`` of each matrix
(``scope: local``) or of all pruned matrices together (``scope: global``)."""

from __future__ import annotations

import torch
from torch import nn

from movprune.pruners.grouping import Grouping
from movprune.pruners.topk_base import TopKMask, TopKPruner


class MagnitudeMask(TopKMask):
    """Mask = top-k of ``|W|``; no scores, and pruned weights get zero gradient through ``W * M``."""

    def importance(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.detach().abs()

    def group_importance(self, grouping: Grouping, weights: list[torch.Tensor]) -> torch.Tensor:
        """Block norm: the root mean square of each group's weights."""
        return grouping.block_rms(weights)

    def is_dense(self) -> bool:
        return self.k >= self.numel

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.k >= self.numel:
            return weight  # dense phase: nothing to mask, and no scores need a gradient
        return weight * self.hard_mask(weight)

    def mask(self, weight: torch.Tensor) -> torch.Tensor:
        return self.hard_mask(weight)


class MagnitudePruner(TopKPruner):
    """Magnitude pruning on the cubic schedule."""

    name = "magnitude"

    def make_mask(self, name: str, layer: nn.Linear) -> MagnitudeMask:
        return MagnitudeMask(layer.weight.numel())

    def make_group_mask(self, grouping: Grouping) -> MagnitudeMask:
        return MagnitudeMask(grouping.num_groups, grouping.score_shape)
