"""The cubic sparsity schedule of Zhu & Gupta (2018) as used by Sanh et al. (2020)."""

from __future__ import annotations


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
