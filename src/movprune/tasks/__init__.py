"""Tasks. A task is a family (``text_classification``, ``regression``, ``extractive_qa``) configured
by a recipe's ``dataset:`` block, or a built-in preset of one (the GLUE tasks, ``squad``). Register
presets in :func:`all_tasks`. Nothing outside this package branches on a task's name."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from movprune.suggest import did_you_mean
from movprune.tasks.config import FAMILIES, DatasetConfig, check_dataset

if TYPE_CHECKING:  # the tasks import torch and datasets; reading a recipe's schema needs neither
    from movprune.tasks.base import Task


@cache
def all_tasks() -> dict[str, Task]:
    """Every built-in (preset) task by name."""
    from movprune.tasks.glue import glue_tasks
    from movprune.tasks.squad import squad_tasks

    return {**glue_tasks(), **squad_tasks()}


def get_task(name: str, dataset: DatasetConfig | None = None) -> Task:
    """The task called ``name``: a preset, or a family reading ``dataset`` (KeyError when unknown)."""
    if name in FAMILIES:
        if dataset is None:
            raise KeyError(f"task {name} needs a dataset: block")
        from movprune.tasks.families import build_family_task

        return build_family_task(name, dataset)
    return all_tasks()[name]


def default_max_seq_length(name: str) -> int | None:
    """The default ``max_seq_length`` of task ``name`` (None when unknown)."""
    if name in FAMILIES:
        return 384 if name == "extractive_qa" else 128
    task = all_tasks().get(name)
    return task.default_max_seq_length if task else None


def check_name(task: str) -> list[str]:
    """A one-line problem when ``task`` is neither a preset nor a family (with a "did you mean")."""
    names = [*FAMILIES, *all_tasks()]
    if task not in names:
        return [f"task: unknown task '{task}' ({did_you_mean(task, names)})"]
    return []


def check_task(task: str, dataset: DatasetConfig | None) -> list[str]:
    """Problems with ``task`` and its ``dataset:`` block (no data is read)."""
    problems = check_name(task)
    if problems:
        return problems
    if task in FAMILIES:
        if dataset is None:
            return [f"task {task}: needs a dataset: block, e.g. dataset: {{files: {{train: train.csv, "
                    "validation: dev.csv}, text_columns: [text], label_column: label}"]
        return check_dataset(task, dataset)
    if dataset is not None:
        family = all_tasks()[task].family
        return [f"dataset: the built-in task '{task}' reads its own data (data_dir or the Hub); for your "
                f"own data use task: {family} with this dataset: block"]
    return []
