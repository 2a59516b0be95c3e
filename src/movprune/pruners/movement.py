"""``movement``: movement pruning (first order): keep the top-k of learned scores ``S`` whose
straight-through gradient is ``dL/dS = dL/dW' * W``.

``scores_init_from: magnitude`` (a remedy, off by default) starts the scores at
``scores_init + |W| / mean |W|`` of each matrix instead of at ``scores_init``: the first weights
removed are then small ones, as in magnitude pruning, until the learned movement has had time to
outweigh that prior (about 1 per 100 steps at ``scores_lr`` 1e-2 for a score whose gradient keeps
one sign)."""

from __future__ import annotations

import torch
from torch import nn

from movprune.pruners.config import MovementConfig
from movprune.pruners.grouping import Grouping
from movprune.pruners.topk import StraightThrough
from movprune.pruners.topk_base import TopKMask, TopKPruner


class MovementMask(TopKMask):
    """Mask = top-k of the scores; the gradient reaches the scores straight through the top-k."""

    def __init__(self, weight: torch.Tensor, scores_init: float, from_magnitude: bool = False):
        super().__init__(weight.numel())
        self.scores = nn.Parameter(torch.full_like(weight, scores_init, dtype=torch.float32))
        if from_magnitude:
            with torch.no_grad():
                magnitude = weight.detach().float().abs()
                self.scores.add_(magnitude / magnitude.mean().clamp_min(torch.finfo(torch.float32).tiny))

    def importance(self, weight: torch.Tensor) -> torch.Tensor:
        return self.scores.detach()

    def mask(self, weight: torch.Tensor) -> torch.Tensor:
        return StraightThrough.apply(self.scores, self.hard_mask(self.scores)).to(weight.dtype)


class MovementPruner(TopKPruner):
    """Movement pruning on the cubic schedule; scores train with their own learning rate."""

    name = "movement"
    NEEDS_TRAINING = True
    config: MovementConfig

    def make_mask(self, name: str, layer: nn.Linear) -> MovementMask:
        return MovementMask(layer.weight.detach(), self.config.scores_init,
                            from_magnitude=self.config.scores_init_from == "magnitude")

    @classmethod
    def check(cls, config: MovementConfig) -> list[str]:
        problems = super().check(config)
        if config.scores_init_from == "magnitude" and config.pattern != "unstructured":
            problems.append(f"pruner.scores_init_from: 'magnitude' starts one score per weight from its |W|; "
                            f"with pattern '{config.pattern}' one score decides many weights, so use "
                            "scores_init_from: constant there")
        return problems

    def make_group_mask(self, grouping: Grouping) -> MovementMask:
        return MovementMask(torch.empty(grouping.score_shape), self.config.scores_init)

    def parameter_groups(self) -> list[dict]:
        return [self.scores_group([m.scores for m in self.masks.values()])]
