"""``none``: dense fine-tuning, the baseline every pruner is compared with."""

from __future__ import annotations

from torch import nn

from movprune.pruners.base import MaskedWeight, Pruner
from movprune.pruners.config import NoneConfig


class NoPruner(Pruner):
    """Attaches no mask; the run is ordinary fine-tuning."""

    name = "none"
    NEEDS_TARGET = False
    MASKS_WEIGHTS = False

    @classmethod
    def check(cls, config: NoneConfig) -> list[str]:
        problems = super().check(config)
        if config.remaining_pct not in (None, 100):
            problems.append(f"pruner.remaining_pct: method 'none' keeps every weight, so remaining_pct "
                            f"{config.remaining_pct:g} cannot be met (set pruner.method to magnitude or movement)")
        return problems

    @property
    def target_remaining_pct(self) -> float:
        return 100.0

    def make_mask(self, name: str, layer: nn.Linear) -> MaskedWeight | None:
        return None
