"""``l0``: L0 regularisation with hard-concrete gates (Louizos et al. 2018) as used by Sanh et al.

Each weight has a learned log-alpha ``S`` (the "scores"). In training the gate is stochastic,
``s = σ((logit(u) + S) / β)`` with ``u ~ U(ε, 1-ε)``; in evaluation it is ``s = σ(S)``. Either way
``M = clamp(s · (r - l) + l, 0, 1)`` with ``l = -0.1``, ``r = 1.1``, ``β = 2/3``: entries with
``M = 0`` are pruned and the others scale their weight by ``M``. The penalty is the expected L0
norm per entry, ``σ(S - β · log(-l / r))``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from movprune.pruners.config import L0Config
from movprune.pruners.grouping import Grouping
from movprune.pruners.regularized import RegularizedPruner, ScoresMask

GATE_LEFT = -0.1
GATE_RIGHT = 1.1
GATE_BETA = 2.0 / 3.0
_NOISE_EPS = 1e-6
#: Eval gates are zero exactly when ``σ(S) <= -l / (r - l) = 1/12``, i.e. ``S <= -log(11)``.
PRUNED_AT_OR_BELOW = math.log(-GATE_LEFT / GATE_RIGHT)
#: The penalty's shift, ``β · log(-l / r)``.
PENALTY_SHIFT = GATE_BETA * math.log(-GATE_LEFT / GATE_RIGHT)


class _TrainingGate(torch.autograd.Function):
    """The stochastic hard-concrete gate, ``clamp(σ((logit(u) + S) / β) (r - l) + l, 0, 1)``, computed
    in place (the gate is memory-bound: fewer passes over the scores make it cheaper)."""

    @staticmethod
    def forward(ctx, log_alpha: torch.Tensor) -> torch.Tensor:
        noise = torch.empty_like(log_alpha).uniform_(_NOISE_EPS, 1.0 - _NOISE_EPS)
        s = noise.logit_().add_(log_alpha).mul_(1.0 / GATE_BETA).sigmoid_()
        ctx.save_for_backward(s)
        return torch.mul(s, GATE_RIGHT - GATE_LEFT).add_(GATE_LEFT).clamp_(0.0, 1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (s,) = ctx.saved_tensors
        # dM/dS = (r - l) / β · s (1 - s) where the clamp is inactive, i.e. 1/12 < s < 11/12
        out = torch.mul(s, 1.0 - s).mul_(grad).mul_((GATE_RIGHT - GATE_LEFT) / GATE_BETA)
        closed, opened = -GATE_LEFT / (GATE_RIGHT - GATE_LEFT), (1.0 - GATE_LEFT) / (GATE_RIGHT - GATE_LEFT)
        return out.masked_fill_((s <= closed) | (s >= opened), 0.0)


class L0Mask(ScoresMask):
    """Hard-concrete gate per weight; stochastic in training, deterministic in evaluation."""

    def __init__(self, weight: torch.Tensor, scores_init: float):
        super().__init__(weight, scores_init)
        # Added to the log-alphas by the final calibration (0 otherwise).
        self.shift = 0.0

    def mask(self, weight: torch.Tensor) -> torch.Tensor:
        log_alpha = self.scores + self.shift if self.shift else self.scores
        if self.training:
            return _TrainingGate.apply(log_alpha).to(weight.dtype)
        s = torch.sigmoid(log_alpha)
        return (s * (GATE_RIGHT - GATE_LEFT) + GATE_LEFT).clamp(0.0, 1.0).to(weight.dtype)

    @torch.no_grad()
    def kept(self) -> int:
        """Entries whose evaluation gate is non-zero."""
        return int(torch.count_nonzero(self.scores > PRUNED_AT_OR_BELOW - self.shift))


class L0Pruner(RegularizedPruner):
    """L0 regularisation; λ is constant (or set by the controller when a target is given)."""

    name = "l0"
    masks: dict[str, L0Mask]
    config: L0Config

    def penalty_terms(self, scores: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(scores - PENALTY_SHIFT)

    def penalty_slope(self, scores: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(scores - PENALTY_SHIFT)
        return s * (1 - s)

    def score_cut(self, step: int) -> float:
        shift = next(iter(self.masks.values())).shift if self.masks else 0.0
        return PRUNED_AT_OR_BELOW - shift

    def make_mask(self, name: str, layer: nn.Linear) -> L0Mask:
        return L0Mask(layer.weight.detach(), self.config.scores_init)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "shifts": {name: m.shift for name, m in self.masks.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for name, m in self.masks.items():
            m.shift = float(state["shifts"][name])

    def make_group_mask(self, grouping: Grouping) -> L0Mask:
        return L0Mask(torch.empty(grouping.score_shape), self.config.scores_init)

    def kept_fraction(self) -> float:
        # Counted on demand (logging, calibration): the gates themselves need no per-step state.
        if self.grouped:
            return self.kept_weights({n: m.kept() for n, m in self.masks.items()})
        return sum(m.kept() for m in self.masks.values()) / sum(m.numel for m in self.masks.values())

    def calibrate(self, kept: int) -> dict[str, Any]:
        cut = self.score_cut_for(kept)
        shift = PRUNED_AT_OR_BELOW - cut  # +inf when every entry is kept
        for m in self.masks.values():
            m.shift = shift
        return {"calibrated_log_alpha_shift": shift if math.isfinite(shift) else None}
