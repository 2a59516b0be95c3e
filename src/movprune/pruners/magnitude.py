"""``magnitude``: gradual magnitude pruning (zeroth order): keep the largest ``|W|`` of each matrix."""

from __future__ import annotations

import torch
from torch import nn

from movprune.pruners.topk import topk_mask
from movprune.pruners.topk_base import TopKMask, TopKPruner


class MagnitudeMask(TopKMask):
    """Mask = top-k of ``|W|``; no scores, and pruned weights get zero gradient through ``W * M``."""

    def importance(self, weight: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return weight.detach().abs()

    def mask(self, weight: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return topk_mask(self.importance(weight), self.k)


class MagnitudePruner(TopKPruner):
    """Magnitude pruning on the cubic schedule."""

    name = "magnitude"

    def make_mask(self, name: str, layer: nn.Linear) -> MagnitudeMask:  # noqa: D102
        return MagnitudeMask(layer.weight.numel())
