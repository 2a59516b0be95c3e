"""Evaluation on every evaluation set of a run's task (mid-run, final, and a teacher's)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from movprune import tasks
from movprune.recipe import Recipe
from movprune.tasks.base import TaskData

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def evaluate_all(task: tasks.Task, model: PreTrainedModel, data: TaskData, tokenizer: PreTrainedTokenizerBase,
                 recipe: Recipe, autocast: Callable[[], AbstractContextManager[Any]],
                 prediction_counts: dict[str, dict[str, int]] | None = None
                 ) -> tuple[dict[str, float], dict[str, Any]]:
    """Evaluate ``model`` on every evaluation set of ``data`` (in ``train.eval_batch_size`` batches,
    each forward pass under ``autocast()``); returns (metrics, artifacts). ``prediction_counts``, when
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
