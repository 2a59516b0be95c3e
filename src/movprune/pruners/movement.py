"""``movement``: movement pruning (first order): keep the top-k of learned scores ``S`` whose
straight-through gradient is ``dL/dS = dL/dW' * W``."""

from __future__ import annotations

import torch
from torch import nn

from movprune.pruners.grouping import Grouping
from movprune.pruners.topk import StraightThrough
from movprune.pruners.topk_base import TopKMask, TopKPruner


class MovementMask(TopKMask):
    """Mask = top-k of the scores; the gradient reaches the scores straight through the top-k."""

    def __init__(self, weight: torch.Tensor, scores_init: float):
        super().__init__(weight.numel())
        self.scores = nn.Parameter(torch.full_like(weight, scores_init, dtype=torch.float32))

    def importance(self, weight: torch.Tensor) -> torch.Tensor:
        return self.scores.detach()

    def mask(self, weight: torch.Tensor) -> torch.Tensor:
        return StraightThrough.apply(self.scores, self.hard_mask(self.scores)).to(weight.dtype)


class MovementPruner(TopKPruner):
    """Movement pruning on the cubic schedule; scores train with their own learning rate."""

    name = "movement"
    DEFAULTS = {"scores_lr": 1e-2, "scores_init": 0.0}

    def make_mask(self, name: str, layer: nn.Linear) -> MovementMask:
        return MovementMask(layer.weight.detach(), self.config.scores_init)

    def make_group_mask(self, grouping: Grouping) -> MovementMask:
        return MovementMask(torch.empty(grouping.score_shape), self.config.scores_init)

    def parameter_groups(self) -> list[dict]:
        return [self.scores_group([m.scores for m in self.masks.values()])]
