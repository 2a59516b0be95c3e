"""Sparsity schedules: the kept fraction at each training step.

A pruner holds one :class:`Schedule` (``Pruner.make_schedule``): gradual methods the cubic schedule of
Zhu & Gupta (2018) as used by Sanh et al. (2020), one-shot methods :class:`OneShotSchedule`, which is
at its final value from the first step (the mask is decided before training and then held).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


def warmup_steps(total_steps: int, initial_warmup: float, final_warmup: float) -> tuple[int, int]:
    """Steps held at the initial value and at the final value, from fractions of ``total_steps``."""
    return round(initial_warmup * total_steps), round(final_warmup * total_steps)


def cubic_schedule(
    step: int,
    total_steps: int,
    initial_value: float,
    final_value: float,
    initial_warmup: float,
    final_warmup: float,
) -> float:
    """Value at ``step`` of a schedule that holds ``initial_value`` for the first ``initial_warmup``
    fraction of steps, holds ``final_value`` for the last ``final_warmup`` fraction, and in between
    follows ``v_t = v_f + (v_i - v_f) * (1 - (t - t_i) / (T - t_i - t_f)) ** 3``.

    Steps at or past ``total_steps`` give ``final_value`` (evaluation uses the final mask).
    """
    t_i, t_f = warmup_steps(total_steps, initial_warmup, final_warmup)
    ramp = total_steps - t_i - t_f
    if step < t_i:
        return initial_value
    if ramp <= 0 or step >= t_i + ramp:
        return final_value
    progress = (step - t_i) / ramp
    return final_value + (initial_value - final_value) * (1.0 - progress) ** 3


class Schedule(Protocol):
    """The kept fraction of the masked weights at a training step."""

    def fraction(self, step: int) -> float:
        """Kept fraction at ``step`` (``step >= total_steps`` gives the final value)."""
        ...


@dataclass(frozen=True)
class CubicSchedule:
    """:func:`cubic_schedule` from 1.0 to ``final_fraction`` over ``total_steps``."""

    total_steps: int
    final_fraction: float
    initial_warmup: float
    final_warmup: float

    def fraction(self, step: int) -> float:
        """Kept fraction at ``step``."""
        return cubic_schedule(step, self.total_steps, 1.0, self.final_fraction, self.initial_warmup,
                              self.final_warmup)


@dataclass(frozen=True)
class OneShotSchedule:
    """``final_fraction`` at every step: the mask is at its target before the first step."""

    final_fraction: float

    def fraction(self, step: int) -> float:
        """Kept fraction at ``step`` (always the final one)."""
        return self.final_fraction
