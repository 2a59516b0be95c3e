"""``soft_movement``: soft movement pruning: keep the weights whose score passes a threshold,
``σ(S) > τ``, with an L1 penalty ``λ · mean σ(S)`` pushing scores down. τ ramps on the cubic
schedule and λ with it (``λ_t = λ · τ_t / τ_final``); no matrix keeps fewer than 0.5% of its weights.
The scores learn straight through the threshold, as in movement pruning."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from movprune.pruners.config import SoftMovementConfig
from movprune.pruners.grouping import Grouping
from movprune.pruners.regularized import RegularizedPruner, ScoresMask
from movprune.pruners.schedule import cubic_schedule
from movprune.pruners.topk import StraightThrough, kept_count, topk_mask

#: The reference implementation never lets a matrix fall below this kept fraction.
MIN_KEPT_FRACTION = 0.005


def logit(p: float) -> float:
    """``log(p / (1 - p))``, with ``±inf`` at 0 and 1."""
    if p <= 0:
        return -math.inf
    if p >= 1:
        return math.inf
    return math.log(p / (1.0 - p))


class SoftMovementMask(ScoresMask):
    """Mask = ``σ(S) > τ`` (computed by the pruner once per step); gradient straight through."""

    def __init__(self, weight: torch.Tensor, scores_init: float):
        super().__init__(weight, scores_init)
        self.hard: torch.Tensor | None = None
        self.kept = self.numel

    @torch.no_grad()
    def set_cut(self, score_cut: float) -> int:
        """Keep the entries with ``S > score_cut`` (``σ(S) > σ(score_cut)``), at least 0.5% of them;
        returns how many are kept."""
        keep = self.scores > score_cut
        kept = int(torch.count_nonzero(keep))
        floor = kept_count(MIN_KEPT_FRACTION, self.numel)
        if kept < floor:
            self.hard, self.kept = topk_mask(self.scores.detach(), floor), floor
        else:
            self.hard, self.kept = keep.float(), kept
        return self.kept

    def mask(self, weight: torch.Tensor) -> torch.Tensor:
        hard = self.hard if self.hard is not None else torch.ones_like(self.scores)
        return StraightThrough.apply(self.scores, hard).to(weight.dtype)


class SoftMovementPruner(RegularizedPruner):
    """Soft movement pruning (threshold on sigmoid scores + L1 penalty on them)."""

    name = "soft_movement"
    masks: dict[str, SoftMovementMask]
    config: SoftMovementConfig

    def __init__(self, config: SoftMovementConfig, total_steps: int):
        super().__init__(config, total_steps)
        self._calibrated_cut: float | None = None

    @classmethod
    def check(cls, config: SoftMovementConfig) -> list[str]:
        problems = super().check(config)
        if config.sigmoid_threshold_final == 0:
            problems.append("pruner.sigmoid_threshold_final: must be above 0 (λ ramps as τ_t / τ_final, "
                            "and σ(S) > 0 keeps every weight); the paper uses 0.1")
        return problems

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "calibrated_cut": self._calibrated_cut}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._calibrated_cut = state["calibrated_cut"]

    def sigmoid_threshold(self, step: int) -> float:
        """τ at ``step`` on the cubic schedule."""
        c = self.config
        return cubic_schedule(step, self.total_steps, c.sigmoid_threshold_initial,
                              c.sigmoid_threshold_final, c.initial_warmup, c.final_warmup)

    def lambda_ramp(self, step: int) -> float:
        return self.sigmoid_threshold(step) / self.config.sigmoid_threshold_final

    def penalty_terms(self, scores: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(scores)

    def penalty_slope(self, scores: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(scores)
        return s * (1 - s)

    def make_mask(self, name: str, layer: nn.Linear) -> SoftMovementMask:
        return SoftMovementMask(layer.weight.detach(), self.config.scores_init)

    def make_group_mask(self, grouping: Grouping) -> SoftMovementMask:
        return SoftMovementMask(torch.empty(grouping.score_shape), self.config.scores_init)

    def score_cut(self, step: int) -> float:
        """The cut on raw scores in force at ``step`` (``logit(τ_t)``, or the calibrated one)."""
        if self._calibrated_cut is not None:
            return self._calibrated_cut
        return logit(self.sigmoid_threshold(step))

    def refresh(self, step: int) -> None:
        cut = self.score_cut(step)
        for m in self.masks.values():
            m.set_cut(cut)

    def kept_fraction(self) -> float:
        if self.grouped:
            return self.kept_weights({n: m.kept for n, m in self.masks.items()})
        return sum(m.kept for m in self.masks.values()) / sum(m.numel for m in self.masks.values())

    def calibrate(self, kept: int) -> dict[str, Any]:
        self._calibrated_cut = self.score_cut_for(kept)
        return {"calibrated_sigmoid_threshold": 1.0 / (1.0 + math.exp(-self._calibrated_cut))
                if math.isfinite(self._calibrated_cut) else 0.0}

    def log_values(self) -> dict[str, float]:
        return {**super().log_values(), "sigmoid_threshold": self.sigmoid_threshold(self.current_step)}
