"""Checks that keep a run from writing an invalid result: inputs checked before training, a
diverged loss stopping the run, and warnings for results that finished but deserve suspicion.

The loop calls these; they hold the rules so that ``loop.py`` stays the loop.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from movprune.errors import RecipeError, TrainingDivergedError

#: Where the remedies for a collapsed model are described (docs/methods.md).
COLLAPSE_REMEDIES = "docs/methods.md#remedies-for-the-collapse"

#: A target-mode regularised run (soft movement, L0) ends with a calibration step that sets the
#: mask to exactly the target. When the mask before that step was further than this fraction of
#: the target away from it (|before - target| > 0.5 x target: above 15% or below 5% for a 10%
#: target), the final mask came mostly from calibration, not from training.
CALIBRATION_RELATIVE_TOLERANCE = 0.5


def check_output_dir(output_dir: str | Path, source: str) -> None:
    """Refuse an ``output_dir`` that is (or lies below) a file, before any training. (A file where
    one run's folder should be fails that run only; see :func:`movprune.io.storage_error`.)"""
    path = Path(output_dir)
    for candidate in (path, *path.parents):
        if candidate.exists() and not candidate.is_dir():
            raise RecipeError(source, [f"output_dir: '{candidate}' is a file, not a folder; set output_dir "
                                       "to a new or existing folder"])


def check_finite_loss(record: dict[str, Any], lr: float) -> None:
    """Raise :class:`TrainingDivergedError` when a logged loss is NaN or infinite.

    Called at logging steps (where the losses are read from the device anyway), so the check adds
    no host synchronisation; the last step is always a logging step.
    """
    bad = {k: v for k, v in record.items() if k.startswith("loss") and not math.isfinite(v)}
    if bad:
        shown = ", ".join(f"{k} = {v}" for k, v in bad.items())
        raise TrainingDivergedError(
            f"step {record['step']}: the training loss diverged ({shown}); the run stopped without a "
            f"result.json. Lower train.lr (now {lr:g}), or check the data and train.max_grad_norm")


def check_finite_weights(model: torch.nn.Module) -> None:
    """Raise :class:`TrainingDivergedError` when a trained weight is NaN or infinite (the last
    optimizer step may diverge after the last logged loss)."""
    bad = [name for name, p in model.named_parameters() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise TrainingDivergedError(
            f"{len(bad)} weight tensors hold NaN or infinite values after training (first: {bad[0]}); "
            "the run stopped without a result.json. Lower train.lr")


def _warning(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def calibration_warning(target_remaining_pct: float | None, summary: dict[str, Any]) -> dict[str, str] | None:
    """A warning when the mask before the final calibration step was far from the target."""
    before = summary.get("remaining_pct_before_calibration")
    if before is None or not target_remaining_pct:
        return None
    if abs(before - target_remaining_pct) <= CALIBRATION_RELATIVE_TOLERANCE * target_remaining_pct:
        return None
    return _warning(
        "mask_from_calibration",
        f"the mask was at {before:.1f}% remaining before the final calibration step set it to the "
        f"{target_remaining_pct:g}% target: the final mask came mostly from calibration, not training "
        "(train longer, or start the scores nearer the cut: pruner.scores_init; see docs/methods.md)")


def one_shot_warning(summary: dict[str, Any]) -> dict[str, str] | None:
    """A flag when the mask was decided in one shot on calibration examples rather than by training."""
    if summary.get("mask_decided_by") != "calibration":
        return None
    return _warning(
        "mask_from_one_shot_calibration",
        f"the mask was decided in one shot from {summary.get('calibration_samples')} calibration examples "
        f"in {summary.get('calibration_seconds')} s, not by training: compare it with trained masks knowing "
        "that (see docs/methods.md#fisher)")


def collapse_warnings(prediction_counts: dict[str, dict[str, int]]) -> list[dict[str, str]]:
    """A warning per evaluation set on which the model predicted one class for every example.

    ``prediction_counts`` maps an evaluation split to its predicted-class histogram, as the task
    reports it (tasks without classes report none).
    """
    found = []
    for split, counts in prediction_counts.items():
        used = {label: n for label, n in counts.items() if n > 0}
        total = sum(used.values())
        if len(counts) > 1 and len(used) == 1 and total > 1:
            label = next(iter(used))
            found.append(_warning(
                "single_class_predictions",
                f"the model predicts class {label} for all {total} examples of {split}: its metrics "
                f"describe a constant classifier (remedies: {COLLAPSE_REMEDIES})"))
    return found


def result_warnings(target_remaining_pct: float | None, pruner_summary: dict[str, Any],
                    prediction_counts: dict[str, dict[str, int]]) -> list[dict[str, str]]:
    """The ``warnings`` list of ``result.json``: ``{code, message}`` per suspicious finding."""
    found = [calibration_warning(target_remaining_pct, pruner_summary), one_shot_warning(pruner_summary)]
    return [w for w in found if w] + collapse_warnings(prediction_counts)

