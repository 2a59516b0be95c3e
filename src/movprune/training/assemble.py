"""The run's result: what ``result.json`` records of a finished run, checked against its schema."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import torch

from movprune import results
from movprune.pruners.counting import remaining_by_module, remaining_pct
from movprune.recipe import Recipe
from movprune.results import RunResult
from movprune.training import guards, processes
from movprune.training.setup import Prepared


def run_result(recipe: Recipe, run: Prepared, final_model: torch.nn.Module, metrics: dict[str, float],
               prediction_counts: dict[str, dict[str, int]], *, train_seconds: float, eval_seconds: float,
               num_processes: int) -> RunResult:
    """The :class:`RunResult` of ``run`` once its pruner is baked into ``final_model`` and ``metrics``
    measured. Compares the masks across processes (collective under several)."""
    pruner = run.pruner
    summary = pruner.summary()
    fields: dict[str, Any] = {
        "name": recipe.run_name, "task": recipe.task, "model": recipe.model, "pruner": recipe.pruner.method,
        "pruner_config": recipe.pruner.model_dump(mode="json"),
        "target_remaining_pct": pruner.target_remaining_pct, "remaining_pct": remaining_pct(final_model),
        "remaining_by_module": remaining_by_module(final_model), "metrics": metrics,
        "metric_names": list(run.task.metric_names), "pruner_summary": summary,
        "prediction_counts": prediction_counts,
        "warnings": guards.result_warnings(pruner.target_remaining_pct, summary, prediction_counts),
        "seed": recipe.seed, "steps": run.steps, "train_seconds": train_seconds, "eval_seconds": eval_seconds,
        "bf16": recipe.train.bf16, "num_processes": num_processes,
        "mask_sha256_by_process": processes.check_masks_agree(final_model),
        "distill": run.distiller.result_entry() if run.distiller else None, "versions": results.versions(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return RunResult.checked(fields, f"run {recipe.run_name}")
