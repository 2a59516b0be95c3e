"""The training loop and what it owns: checkpoints, the data order, pre-emption, tracking, guards,
multi-process rules and distillation. Code above this package calls the names below only:
:func:`run` and :func:`check_inputs` (sweeps, the CLI), and the pieces of the loop that the library
API (:mod:`movprune.library`) drives from the user's own loop. Nothing above it reaches into the
loop's internals (tests/test_layers.py enforces it)."""

from __future__ import annotations

from movprune.training.assemble import result_record
from movprune.training.checkpoint import read_state, write_state
from movprune.training.distill.loss import distillation_loss
from movprune.training.guards import check_finite_weights
from movprune.training.loop import check_inputs, run
from movprune.training.setup import optimizer_groups

__all__ = ["check_finite_weights", "check_inputs", "distillation_loss", "optimizer_groups", "read_state",
           "result_record", "run", "write_state"]
