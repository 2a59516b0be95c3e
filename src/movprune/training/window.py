"""The logging window: the loss parts of the steps since the last logged step, kept on the device
until that step reads them (one host synchronisation per logged step, none per training step)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from movprune.training import processes


@dataclass
class LogWindow:
    """Loss parts summed over ``steps`` training steps that saw ``samples`` examples (all processes),
    since ``started`` (``time.perf_counter``)."""

    parts: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: int = 0
    samples: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, parts: dict[str, torch.Tensor], samples: int) -> None:
        """Fold one step's detached loss parts and its global batch size in (no host sync)."""
        for key, value in parts.items():
            self.parts[key] = self.parts[key] + value if key in self.parts else value
        self.steps += 1
        self.samples += samples

    def flush(self, accelerator: Any) -> tuple[dict[str, float], float]:
        """The mean of each loss part over the window's steps and the processes, and the examples per
        second since the window started; then :meth:`reset`. Collective under several processes."""
        rate = self.samples / max(time.perf_counter() - self.started, 1e-9)
        means = {key: float(value) / self.steps
                 for key, value in processes.mean_across_processes(accelerator, self.parts).items()}
        self.reset()
        return means, rate

    def reset(self) -> None:
        """Empty the window and restart its clock."""
        self.parts, self.steps, self.samples, self.started = {}, 0, 0, time.perf_counter()
