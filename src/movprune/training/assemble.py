"""The run's result: what ``result.json`` records of a finished run, checked against its schema.

:func:`result_record` is the one place the field set is assembled: ``movprune run``'s loop
(:func:`run_result`) and the library API's run folders both call it."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import torch

from movprune import results
from movprune.pruners.base import Pruner
from movprune.pruners.counting import remaining_by_module, remaining_pct
from movprune.recipe import Recipe
from movprune.results import RunResult
from movprune.training import guards, processes
from movprune.training.setup import Prepared


def result_record(*, name: str, task: str, model_name: str, pruner: Pruner, pruner_config: Any,
                  final_model: torch.nn.Module, metrics: dict[str, float], metric_names: list[str], seed: int,
                  steps: int, train_seconds: float, num_processes: int,
                  prediction_counts: dict[str, dict[str, int]] | None = None, **extra: Any) -> RunResult:
    """The checked :class:`RunResult` of a run whose ``pruner`` is baked into ``final_model`` and whose
    ``metrics`` are measured; ``extra`` holds the optional fields (``eval_seconds``, ``bf16``,
    ``distill``, ``source``). Compares the masks across processes (collective under several)."""
    summary = pruner.summary()
    counts = prediction_counts or {}
    fields: dict[str, Any] = {
        "name": name, "task": task, "model": model_name, "pruner": pruner_config.method,
        "pruner_config": pruner_config.model_dump(mode="json"),
        "target_remaining_pct": pruner.target_remaining_pct, "remaining_pct": remaining_pct(final_model),
        "remaining_by_module": remaining_by_module(final_model), "metrics": metrics,
        "metric_names": metric_names, "pruner_summary": summary,
        **({"prediction_counts": prediction_counts} if prediction_counts is not None else {}),
        "warnings": guards.result_warnings(pruner.target_remaining_pct, summary, counts),
        "seed": seed, "steps": steps, "train_seconds": train_seconds, "num_processes": num_processes,
        "mask_sha256_by_process": processes.check_masks_agree(final_model), "versions": results.versions(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra,
    }
    return RunResult.checked(fields, f"run {name}")


def run_result(recipe: Recipe, run: Prepared, final_model: torch.nn.Module, metrics: dict[str, float],
               prediction_counts: dict[str, dict[str, int]], *, train_seconds: float, eval_seconds: float,
               num_processes: int) -> RunResult:
    """The :class:`RunResult` of ``movprune run``'s ``run`` once its pruner is baked into ``final_model``
    and ``metrics`` measured."""
    return result_record(
        name=recipe.run_name, task=recipe.task, model_name=recipe.model, pruner=run.pruner,
        pruner_config=recipe.pruner, final_model=final_model, metrics=metrics,
        metric_names=list(run.task.metric_names), seed=recipe.seed, steps=run.steps, train_seconds=train_seconds,
        num_processes=num_processes, prediction_counts=prediction_counts, eval_seconds=eval_seconds,
        bf16=recipe.train.bf16, distill=run.distiller.result_entry() if run.distiller else None)
