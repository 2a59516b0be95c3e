"""Evaluation on every evaluation set of a run's task (mid-run, final, and a teacher's)."""

from __future__ import annotations

from typing import Any

from movprune import tasks
from movprune.recipe import Recipe
from movprune.tasks.base import TaskData


def evaluate_all(task: tasks.Task, model, data: TaskData, tokenizer, recipe: Recipe, autocast,
                 prediction_counts: dict[str, dict[str, int]] | None = None):
    """Evaluate on every evaluation set; returns (metrics, artifacts). ``prediction_counts``, when
    given, receives each set's predicted-class histogram (classification tasks)."""
    metrics: dict[str, float] = {}
    artifacts: dict[str, Any] = {}
    for evalset in data.evals:
        out = task.evaluate(model, evalset, tokenizer, recipe.train.eval_batch_size, autocast)
        metrics.update(out.metrics)
        artifacts.update(out.artifacts)
        if prediction_counts is not None and out.prediction_counts is not None:
            prediction_counts[evalset.split] = out.prediction_counts
    return metrics, artifacts
