"""A feedback controller on the penalty strength λ that drives a regularised pruner (soft movement,
L0) to a scheduled density, used when ``remaining_pct`` is set.

Why not a controller on the kept count itself: scores move at most about one learning rate per
step under Adam, so for tens of steps after λ rises nothing crosses the cut, an integral controller
on the count winds up meanwhile, and the scores, pushed down together, then cross all at once. The
error here is measured in score units instead: ``e = q − c``, where ``q`` is the score at the
scheduled quantile (the k-th largest score, k = scheduled kept count) and ``c`` the method's cut.
``e > 0`` means too dense, ``e = 0`` means the mask keeps exactly the scheduled count, and ``e``
responds at once to λ. The controller integrates the error predicted ``horizon`` steps ahead,
``e + horizon · dq/dt``, in units of how far scores move in that time: it asks the scheduled
quantile to approach the cut with time constant ``horizon`` and stops raising λ as soon as it does,
so λ does not wind up while the scores are still on their way. ``dq/dt`` is the motion of the
scores alone (the same quantile before and after the step), not of the schedule: soft movement's
cut rises steeply at the start of its ramp, and reacting to that would read as scores racing down.

λ is signed, ``λ = scale · sinh(u)``: like a Lagrange multiplier it turns into a reward for keeping
weights when the run has pruned too much, so overshoot is corrected rather than frozen in. ``scale``
is measured, not guessed: the ratio of the task's gradient on the scores to the penalty's gradient
(root mean squares) while λ is still zero, so the same gains work on models whose per-weight
penalty gradients differ by orders of magnitude.
"""

from __future__ import annotations

import math

#: Bound on the controller state: |λ| <= scale · sinh(12) ≈ 8e4 · scale.
U_LIMIT = 12.0


class LambdaController:
    """``u += gain · clip((e + horizon · dq/dt) / (horizon · speed), −1, 1)`` per step and
    ``λ = scale · sinh(u)``, where ``speed`` is how far the scores move per step (mean |ΔS|)."""

    def __init__(self, gain: float = 0.05, horizon: float = 10.0, smoothing: float = 0.8):
        self.gain = gain
        self.horizon = horizon
        self.smoothing = smoothing
        self.u = 0.0
        self.scale: float | None = None
        self._velocity: float | None = None
        self._speed: float | None = None

    @property
    def value(self) -> float:
        """The current λ (0 until the scale is known)."""
        return 0.0 if self.scale is None else self.scale * math.sinh(self.u)

    def set_scale(self, task_grad_rms: float, penalty_grad_rms: float) -> None:
        """Fix λ's unit: the λ at which the penalty's gradient matches the task's (rms)."""
        if penalty_grad_rms > 0 and task_grad_rms > 0 and math.isfinite(task_grad_rms):
            self.scale = task_grad_rms / penalty_grad_rms
        else:
            self.scale = 1.0

    def state_dict(self) -> dict[str, float | None]:
        """The integrator ``u``, λ's unit and the smoothed motion estimates."""
        return {"u": self.u, "scale": self.scale, "velocity": self._velocity, "speed": self._speed}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        """Restore :meth:`state_dict`."""
        self.u, self.scale = float(state["u"]), state["scale"]
        self._velocity, self._speed = state["velocity"], state["speed"]

    def _smooth(self, old: float | None, new: float) -> float:
        return new if old is None else self.smoothing * old + (1.0 - self.smoothing) * new

    def update(self, error: float, velocity: float, speed: float) -> None:
        """One correction from ``error`` (score units, positive when the mask keeps too much),
        ``velocity`` (how much the scheduled-quantile score moved over the last step, at a fixed
        quantile) and ``speed`` (the mean absolute change of a score over the last step)."""
        if not (math.isfinite(error) and math.isfinite(velocity) and math.isfinite(speed)):
            return
        self._velocity = self._smooth(self._velocity, velocity)
        self._speed = self._smooth(self._speed, speed)
        predicted = (error + self.horizon * self._velocity) / (self.horizon * max(self._speed, 1e-8))
        self.u = max(-U_LIMIT, min(U_LIMIT, self.u + self.gain * max(-1.0, min(1.0, predicted))))
