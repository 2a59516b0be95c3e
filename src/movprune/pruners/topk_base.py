"""Shared machinery of the top-k pruners (magnitude, movement): a kept count per matrix that
follows the cubic schedule."""

from __future__ import annotations

import torch
from torch import nn

from movprune.pruners.base import MaskedWeight, Pruner
from movprune.pruners.topk import kept_count


class TopKMask(MaskedWeight):
    """Keeps the ``k`` entries with the largest importance; ``k`` is set by the pruner each step."""

    def __init__(self, numel: int):
        super().__init__()
        self.numel = numel
        self.k = numel

    def importance(self, weight: torch.Tensor) -> torch.Tensor:
        """The importance whose top-k is kept."""
        raise NotImplementedError


class TopKPruner(Pruner):
    """Base of the pruners that keep a scheduled fraction of each matrix by a top-k."""

    masks: dict[str, TopKMask]

    def kept_counts(self, fraction: float) -> dict[str, int]:
        """Entries to keep per matrix when keeping ``fraction`` of the encoder weights."""
        return {name: kept_count(fraction, m.numel) for name, m in self.masks.items()}

    def step(self, step: int) -> None:  # noqa: D102
        super().step(step)
        if not self.masks:
            return
        self.fraction = self.scheduled_fraction(step)
        for name, k in self.kept_counts(self.fraction).items():
            self.masks[name].k = k

    def current_remaining_pct(self) -> float:  # noqa: D102
        # The kept counts are exact, so this needs no pass over the weights.
        total = sum(m.numel for m in self.masks.values())
        return 100.0 * sum(m.k for m in self.masks.values()) / max(total, 1)

    def make_mask(self, name: str, layer: nn.Linear) -> TopKMask:  # noqa: D102
        raise NotImplementedError
