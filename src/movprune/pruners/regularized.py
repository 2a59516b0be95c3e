"""Shared machinery of the regularised pruners (soft movement, L0): learned scores, a penalty
``λ_t · (mean over matrices of mean_entries f(S))`` added to the loss, and two ways to set λ:

* **fixed λ** (the paper; ``remaining_pct: null``, ``lambda_final`` set): λ follows ``lambda_final``
  and the final density is whatever the run ends with.
* **target** (``remaining_pct`` set): a :class:`~movprune.pruners.controller.LambdaController`
  sets λ every step so that the mask follows the cubic schedule from 100% to the target. At the end
  a calibration step moves the method's cut on the final scores so that the final mask keeps exactly
  the target; :meth:`RegularizedPruner.summary` (``result.json`` ``pruner_summary``) records the
  density the controller had reached before that step.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from movprune import distributed
from movprune.pruners.base import MaskedWeight, Pruner
from movprune.pruners.config import L0Config, SoftMovementConfig
from movprune.pruners.controller import LambdaController
from movprune.pruners.grouping import weighted_cut
from movprune.pruners.topk import kept_count, kth_largest

#: Scores sampled (at fixed random positions) to estimate the scheduled quantile each step.
QUANTILE_SAMPLE = 1 << 18


class ScoresMask(MaskedWeight):
    """A mask driven by one learned score per weight (float32, same shape as the weight)."""

    def __init__(self, weight: torch.Tensor, scores_init: float):
        super().__init__()
        self.numel = weight.numel()
        self.scores = nn.Parameter(torch.full_like(weight, scores_init, dtype=torch.float32))


class RegularizedPruner(Pruner):
    """Base of the pruners whose sparsity comes from a penalty on learned scores."""

    NEEDS_TARGET = False
    NEEDS_TRAINING = True
    masks: dict[str, ScoresMask]
    config: SoftMovementConfig | L0Config

    def __init__(self, config: SoftMovementConfig | L0Config, total_steps: int):
        super().__init__(config, total_steps)
        self.controller = (LambdaController(horizon=self.controller_horizon())
                           if config.remaining_pct is not None else None)
        self._controlled_step = -1
        self._calibration: dict[str, Any] = {}
        self._sample: list[torch.Tensor | None] | None = None
        self._sampled: torch.Tensor | None = None
        self._hooks: list[Any] = []
        self._task_grad_sq = 0.0
        self._task_grad_n = 0

    @classmethod
    def check(cls, config: SoftMovementConfig | L0Config) -> list[str]:
        problems = []
        if config.remaining_pct is None and config.lambda_final is None:
            problems.append(
                f"pruner: method '{cls.name}' needs pruner.remaining_pct (a target the run is driven to, "
                "e.g. pruner.remaining_pct=10) or pruner.lambda_final (the paper's fixed penalty, "
                f"e.g. pruner.lambda_final={config.PAPER_LAMBDA_FINAL:g})")
        if config.remaining_pct is not None and config.lambda_final is not None:
            problems.append(
                f"pruner: set either remaining_pct (λ is then adjusted to reach it) or lambda_final (the "
                f"paper's fixed λ; the density follows from it), not both; got remaining_pct="
                f"{config.remaining_pct:g} and lambda_final={config.lambda_final:g}")
        if config.scope != "local":
            problems.append(
                f"pruner.scope: method '{cls.name}' keeps the weights whose score passes one cut shared "
                "by all matrices, so it is global by construction; leave scope at 'local' (its default)")
        return problems

    def controller_horizon(self) -> float:
        """Steps over which the controller lets the scores approach the cut: a sixth of the ramp
        (so it settles within the final warm-up), between 5 and 50 steps."""
        c = self.config
        ramp = self.total_steps * (1.0 - c.initial_warmup - c.final_warmup)
        return min(50.0, max(5.0, ramp / 6.0))

    @property
    def target_mode(self) -> bool:
        """Whether a controller drives the run to ``remaining_pct``."""
        return self.controller is not None

    # -- method specifics ---------------------------------------------------------------------
    def penalty_terms(self, scores: torch.Tensor) -> torch.Tensor:
        """The per-entry quantity whose mean is the method's penalty."""
        raise NotImplementedError

    def penalty_slope(self, scores: torch.Tensor) -> torch.Tensor:
        """d(penalty_terms)/d(scores), entry-wise."""
        raise NotImplementedError

    def lambda_ramp(self, step: int) -> float:
        """Factor on the fixed λ at ``step`` (the paper ramps soft movement's λ with its threshold)."""
        return 1.0

    def score_cut(self, step: int) -> float:
        """Scores above this value are kept at ``step``."""
        raise NotImplementedError

    def refresh(self, step: int) -> None:
        """Put the deterministic masks (if the method caches any) in their state at ``step``."""

    def kept_fraction(self) -> float:
        """Fraction of the weights the deterministic (evaluation) masks keep now."""
        raise NotImplementedError

    def calibrate(self, kept: int) -> dict[str, Any]:
        """Move the method's cut so that exactly ``kept`` entries survive; returns what it set."""
        raise NotImplementedError

    # -- life cycle ---------------------------------------------------------------------------
    def make_mask(self, name: str, layer: nn.Linear) -> ScoresMask:
        raise NotImplementedError

    def attach(self, model: nn.Module) -> None:
        super().attach(model)
        if self.target_mode:
            for m in self.masks.values():
                self._hooks.append(m.scores.register_post_accumulate_grad_hook(self._record_task_grad))

    def _record_task_grad(self, param: torch.Tensor) -> None:
        # Only while λ is 0, so the gradient is the task's alone.
        if param.grad is not None and self.lambda_value == 0:
            self._task_grad_sq += float(param.grad.detach().float().pow(2).sum())
            self._task_grad_n += param.numel()

    def state_dict(self) -> dict[str, Any]:
        state = {**super().state_dict(), "controlled_step": self._controlled_step,
                 "calibration": dict(self._calibration), "task_grad_sq": self._task_grad_sq,
                 "task_grad_n": self._task_grad_n}
        if self.controller is not None:
            state["controller"] = self.controller.state_dict()
        if self._sampled is not None:
            state["sampled_scores"] = self._sampled.detach().cpu()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._controlled_step = int(state["controlled_step"])
        self._calibration = dict(state["calibration"])
        self._task_grad_sq, self._task_grad_n = float(state["task_grad_sq"]), int(state["task_grad_n"])
        if self.controller is not None:
            self.controller.load_state_dict(state["controller"])
            if self.controller.scale is not None:  # the scale is measured once: stop recording
                for handle in self._hooks:
                    handle.remove()
                self._hooks.clear()
        sampled = state.get("sampled_scores")
        if sampled is not None and self.masks:
            sampled = sampled.to(next(iter(self.masks.values())).scores.device)
        self._sampled = sampled

    def parameter_groups(self) -> list[dict]:
        return [self.scores_group([m.scores for m in self.masks.values()])]

    @torch.no_grad()
    def step(self, step: int) -> None:
        super().step(step)
        if not self.masks:
            return
        self.refresh(step)
        # Once per step: attach() already computes step 0, which the first training step computes again.
        if self.target_mode and self._controlled_step < step < self.total_steps:
            self._controlled_step = step
            scheduled = self.scheduled_fraction(step)
            if scheduled < 1.0:
                if self.controller.scale is None:
                    self._set_controller_scale()
                quantile, velocity, speed = self.scheduled_score(scheduled)
                self.controller.update(quantile - self.score_cut(step), velocity, speed)

    def _set_controller_scale(self) -> None:
        # Pooled over the processes of a multi-process run (each measured its share of the batch),
        # so every process gets the same scale, hence the same λ.
        grad_sq, grad_n = distributed.sum_across([self._task_grad_sq, self._task_grad_n])
        task_rms = math.sqrt(grad_sq / grad_n) if grad_n else 0.0
        n_matrices = len(self.masks)
        sq = sum(float((self.penalty_slope(m.scores) / (m.numel * n_matrices)).pow(2).sum())
                 for m in self.masks.values())
        penalty_rms = math.sqrt(sq / sum(m.numel for m in self.masks.values()))
        self.controller.set_scale(task_rms, penalty_rms)
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()

    def scheduled_score(self, fraction: float) -> tuple[float, float, float]:
        """The score at the ``fraction`` quantile from the top; how much that quantile moved since
        the last call; and the mean absolute change of a score since then. Estimated on a fixed
        random sample of entries when the model is large."""
        if self.grouped:
            return self._scheduled_group_score(fraction)
        if self._sample is None:
            total = sum(m.numel for m in self.masks.values())
            rate = min(1.0, QUANTILE_SAMPLE / total)
            gen = torch.Generator().manual_seed(0)
            self._sample = [
                torch.randperm(m.numel, generator=gen)[: max(1, round(rate * m.numel))].to(m.scores.device)
                if rate < 1 else None
                for m in self.masks.values()]
        values = torch.cat([m.scores.detach().reshape(-1) if idx is None else m.scores.detach().reshape(-1)[idx]
                            for m, idx in zip(self.masks.values(), self._sample)])
        k = kept_count(fraction, values.numel())
        quantile = float(kth_largest([values], k))
        previous, self._sampled = self._sampled, values
        if previous is None:
            return quantile, math.nan, math.nan
        velocity = quantile - float(kth_largest([previous], k))
        return quantile, velocity, float((values - previous).abs().mean())

    def _scheduled_group_score(self, fraction: float) -> tuple[float, float, float]:
        """:meth:`scheduled_score` over groups, each weighing its number of weights (block and hybrid
        patterns have few enough scores to rank them all)."""
        names = list(self.masks)
        sizes = [self.group_numel(n) for n in names]
        values = [self.masks[n].scores.detach().reshape(-1) for n in names]
        kept = kept_count(fraction, sum(v.numel() * g for v, g in zip(values, sizes)))
        quantile = weighted_cut(values, sizes, kept)[0]
        flat = torch.cat(values)
        previous, self._sampled = self._sampled, flat
        if previous is None:
            return quantile, math.nan, math.nan
        before = weighted_cut(list(previous.split([v.numel() for v in values])), sizes, kept)[0]
        return quantile, quantile - before, float((flat - previous).abs().mean())

    def total_weights(self) -> int:
        """Weights under the masks (the unit of ``remaining_pct``)."""
        return sum(m.numel * self.group_numel(n) for n, m in self.masks.items())

    def kept_weights(self, kept_per_mask: dict[str, int]) -> float:
        """Fraction of the weights kept when mask ``n`` keeps ``kept_per_mask[n]`` of its entries."""
        return sum(k * self.group_numel(n) for n, k in kept_per_mask.items()) / max(self.total_weights(), 1)

    @property
    def lambda_value(self) -> float:
        """λ at the current step."""
        if self.target_mode:
            return self.controller.value if self.scheduled_fraction(self.current_step) < 1.0 else 0.0
        return self.config.lambda_final * self.lambda_ramp(self.current_step)

    def penalty(self) -> torch.Tensor | None:
        if not self.masks:
            return None
        lam = self.lambda_value
        if lam == 0:
            return torch.zeros((), device=next(iter(self.masks.values())).scores.device)
        # Mean per matrix, then mean over matrices (as the reference implementation averages); a
        # grouping spanning several matrices (hybrid) counts as that many matrices.
        terms = [self.penalty_terms(m.scores).mean() for m in self.masks.values()]
        if not self.grouped:
            return lam * torch.stack(terms).mean()
        counts = torch.tensor([float(len(self.groupings[n].members)) for n in self.masks], device=terms[0].device)
        return lam * (torch.stack(terms) * counts).sum() / counts.sum()

    def finalize(self) -> None:
        self.step(self.total_steps)
        if not self.target_mode or self._calibration:
            return
        total = self.total_weights()
        before = self.kept_fraction()
        target = kept_count(self.config.remaining_pct / 100.0, total)
        self._calibration = {"remaining_pct_before_calibration": 100.0 * before,
                             "lambda_at_end": self.controller.value, **self.calibrate(target)}
        self.refresh(self.total_steps)

    def current_remaining_pct(self) -> float:
        return 100.0 * self.kept_fraction() if self.masks else 100.0

    def log_values(self) -> dict[str, float]:
        values = {"remaining_pct": self.current_remaining_pct(), "lambda": self.lambda_value}
        if self.target_mode:
            values["scheduled_remaining_pct"] = 100.0 * self.scheduled_fraction(self.current_step)
        return values

    def summary(self) -> dict[str, Any]:
        return {"lambda_mode": "target" if self.target_mode else "fixed", **self._calibration}

    # -- helpers ------------------------------------------------------------------------------
    def score_cut_for(self, kept: int) -> float:
        """A cut on the raw scores between the ``kept``-th and the next largest score over all
        matrices, so that ``scores > cut`` keeps ``kept`` entries (ties aside); for block and
        hybrid patterns ``kept`` counts weights and the cut falls between whole groups."""
        scores = [m.scores for m in self.masks.values()]
        if self.grouped:
            if kept >= self.total_weights():
                return -math.inf
            upper, lower = weighted_cut(scores, [self.group_numel(n) for n in self.masks], kept)
            return (upper + lower) / 2 if math.isfinite(lower) else -math.inf
        total = sum(s.numel() for s in scores)
        if kept >= total:
            return -math.inf
        upper = float(kth_largest(scores, kept))
        lower = float(kth_largest(scores, kept + 1))
        return (upper + lower) / 2
