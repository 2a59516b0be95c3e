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
    pattern: Literal["unstructured", "block", "hybrid"] = Field(
        default="unstructured",
        description="what one score/importance decides: a weight, a block_shape block, or (hybrid) a whole "
                    "attention head / FFN neuron; see movprune.pruners.grouping")
    block_shape: tuple[int, int] | None = Field(
        default=None, description="[rows, cols] of a block, for pattern: block (e.g. [32, 32])")

    @model_validator(mode="after")
    def _warmups_leave_a_ramp(self) -> PrunerConfig:
        if self.initial_warmup + self.final_warmup >= 1:
            raise ValueError(
                f"initial_warmup ({self.initial_warmup}) + final_warmup ({self.final_warmup}) must be "
                "below 1 so that the sparsity ramp has steps left"
            )
        return self

    @model_validator(mode="after")
    def _block_shape_with_block_pattern(self) -> PrunerConfig:
        if self.pattern == "block" and self.block_shape is None:
            raise ValueError("pattern 'block' needs block_shape: [rows, cols] (e.g. pruner.block_shape=[32,32])")
        if self.pattern != "block" and self.block_shape is not None:
            raise ValueError(f"block_shape applies to pattern 'block' only (pattern is '{self.pattern}'); "
                             "remove it or set pruner.pattern=block")
        if self.block_shape is not None and min(self.block_shape) < 1:
            raise ValueError(f"block_shape {list(self.block_shape)}: rows and cols must be at least 1")
        return self
