"""The training loop and what it owns: checkpoints, the data order, pre-emption, tracking, guards,
multi-process rules and distillation. Code above this package (sweeps, the CLI) calls :func:`run`
and :func:`check_inputs`; nothing above it reaches into the loop's internals."""

from __future__ import annotations

from movprune.training.loop import check_inputs, run

__all__ = ["check_inputs", "run"]
