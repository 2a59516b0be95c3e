"""``sensitivity``: top-k of an uncertainty-weighted sensitivity, in the style of PLATON (Zhang et
al., ICML 2022), on the cubic schedule like magnitude and movement.

Each training step gives every weight a sensitivity ``I_t = |W ⊙ ∂L/∂W|`` (the first-order change
of the loss if the weight were removed). Two exponential moving averages smooth it,

    Ī_t = β1 Ī_{t-1} + (1 - β1) I_t            (sensitivity)
    Ū_t = β2 Ū_{t-1} + (1 - β2) |I_t - Ī_t|     (its uncertainty)

and the importance is ``Ī_t · Ū_t``; both start at 0, with the paper's defaults β1 = 0.85 and
β2 = 0.95. The gradient is that of the original weight, taken as the backward pass leaves it (before
clipping; the optimizer step comes after), so a removed weight has ``I_t = 0``: its importance
decays, and it returns only if kept weights fall below it, as in PLATON, where removed weights are
zeroed. There are no learned scores and no extra optimizer state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from movprune.pruners.config import SensitivityConfig
from movprune.pruners.magnitude import MagnitudeMask
from movprune.pruners.topk_base import TopKPruner


class SensitivityMask(MagnitudeMask):
    """Mask = top-k of ``Ī · Ū``; the moving averages are updated from each backward pass."""

    def __init__(self, weight: torch.Tensor, beta1: float, beta2: float):
        super().__init__(weight.numel())
        self.beta1, self.beta2 = beta1, beta2
        # Persistent: the model's state (a checkpoint's model.safetensors) carries them, so a resumed
        # run continues the averages; baking removes them with the mask.
        self.register_buffer("sensitivity", torch.zeros_like(weight, dtype=torch.float32))
        self.register_buffer("uncertainty", torch.zeros_like(weight, dtype=torch.float32))

    def importance(self, weight: torch.Tensor) -> torch.Tensor:
        return self.sensitivity * self.uncertainty

    @torch.no_grad()
    def observe(self, weight: torch.Tensor) -> None:
        """Fold ``|W ⊙ ∂L/∂W|`` of the step that just ran its backward pass into the averages."""
        if weight.grad is None:
            return
        current = (weight.detach().float() * weight.grad.float()).abs_()
        self.sensitivity.mul_(self.beta1).add_(current, alpha=1.0 - self.beta1)
        self.uncertainty.mul_(self.beta2).add_(current.sub_(self.sensitivity).abs_(), alpha=1.0 - self.beta2)


class SensitivityPruner(TopKPruner):
    """PLATON-style sensitivity pruning on the cubic schedule."""

    name = "sensitivity"
    NEEDS_TRAINING = True
    masks: dict[str, SensitivityMask]
    config: SensitivityConfig

    def __init__(self, config: SensitivityConfig, total_steps: int):
        super().__init__(config, total_steps)
        self._hooks: list[Any] = []

    def make_mask(self, name: str, layer: nn.Linear) -> SensitivityMask:
        return SensitivityMask(layer.weight.detach(), self.config.sensitivity_beta1, self.config.sensitivity_beta2)

    def attach(self, model: nn.Module) -> None:
        super().attach(model)
        for name, mask in self.masks.items():
            self._hooks.append(self.original_weight(name).register_post_accumulate_grad_hook(mask.observe))

    def bake(self, model: nn.Module) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        super().bake(model)
