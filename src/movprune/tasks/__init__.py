"""Tasks. A task family is one module; register its tasks in :func:`all_tasks`. Nothing outside
this package branches on a task's name."""

from __future__ import annotations

from functools import cache

from movprune.suggest import did_you_mean
from movprune.tasks.base import Task


@cache
def all_tasks() -> dict[str, Task]:
    """Every task by name."""
    from movprune.tasks.glue import glue_tasks
    from movprune.tasks.squad import squad_tasks

    return {**glue_tasks(), **squad_tasks()}


def get_task(name: str) -> Task:
    """The task called ``name`` (KeyError when unknown)."""
    return all_tasks()[name]


def check_name(task: str) -> list[str]:
    """A one-line problem when ``task`` is not a registered task (with a "did you mean")."""
    tasks = all_tasks()
    if task not in tasks:
        return [f"task: unknown task '{task}' ({did_you_mean(task, tasks)})"]
    return []
