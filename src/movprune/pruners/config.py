"""The ``pruner:`` section of a recipe. It belongs to the pruners, which read it; the recipe above
composes it with the other sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from movprune.schema import StrictModel


class PrunerConfig(StrictModel):
    """Which weights to prune, how many to keep, and on what schedule.

    Method-specific keys left at ``null`` take the method's default (see ``movprune.pruners``),
    and the resolved recipe written to the run folder shows the value used.
    """

    method: str = "none"
    remaining_pct: float | None = Field(
        default=None, gt=0, le=100,
        description="target % of encoder Linear weights kept at the end (the paper's remaining weights)",
    )
    initial_warmup: float = Field(default=0.1, ge=0, lt=1, description="fraction of steps kept dense")
    final_warmup: float = Field(default=0.2, ge=0, lt=1, description="fraction of final steps at the target")
    scores_lr: float | None = Field(default=None, gt=0)
    scope: Literal["local", "global"] = "local"
    scores_init: float | None = None
    lambda_final: float | None = Field(default=None, ge=0)
    sigmoid_threshold_initial: float | None = Field(default=None, ge=0, le=1)
    sigmoid_threshold_final: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _warmups_leave_a_ramp(self) -> PrunerConfig:
        if self.initial_warmup + self.final_warmup >= 1:
            raise ValueError(
                f"initial_warmup ({self.initial_warmup}) + final_warmup ({self.final_warmup}) must be "
                "below 1 so that the sparsity ramp has steps left"
            )
        return self
