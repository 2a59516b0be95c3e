"""Which runs may share a cell of a comparison: those whose settings differ in nothing but the seed.

A cell reports "mean ± std over seeds"; averaging two seed-42 runs trained with different learning
rates into it would print a statistic of nothing. Settings come from each run's saved
``recipe.yaml`` (every key, not a chosen list) plus the effective budget from ``result.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from movprune import results
from movprune.errors import RecipeError

#: Recipe keys that never make two runs different experiments: where the run is written, and the
#: seed (the axis a cell averages over). ``pruner.remaining_pct`` is the comparison's row.
NOT_SETTINGS = frozenset({"name", "output_dir", "seed", "pruner.remaining_pct"})
#: Effective settings recorded in ``result.json`` rather than in the recipe.
FROM_RESULT = ("steps", "num_processes")


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: node}


def saved_recipe(result: dict[str, Any]) -> dict[str, Any] | None:
    """The run's ``recipe.yaml`` as a mapping (read with the recipe's size and alias bounds); None
    when it is missing or unreadable."""
    from movprune.recipe import read_recipe_data  # deferred: pydantic, not needed by every command

    try:
        return read_recipe_data(Path(result["run_dir"]) / results.RECIPE_FILE)
    except (KeyError, OSError, RecipeError):
        return None


def run_settings(result: dict[str, Any]) -> dict[str, Any] | None:
    """Every setting of a run except :data:`NOT_SETTINGS`, as ``{"train.lr": 3e-05, ...}``; None when
    its ``recipe.yaml`` is missing or unreadable. A null ``train.max_seq_length`` is the task's
    default."""
    recipe = saved_recipe(result)
    if recipe is None:
        return None
    if isinstance(recipe.get("pruner"), dict):
        # Older runs list every method's keys, the unused ones null: the same settings as no key.
        from movprune.pruners.config import without_null_method_keys

        recipe["pruner"] = without_null_method_keys(recipe["pruner"])
    settings = {k: v for k, v in _flatten(recipe).items() if k not in NOT_SETTINGS}
    settings.update({key: result.get(key) for key in FROM_RESULT})
    if settings.get("train.max_seq_length") is None:
        # Leaving it to the task and writing the task's default out are the same setting.
        from movprune import tasks

        task = tasks.all_tasks().get(str(result.get("task")))
        settings["train.max_seq_length"] = task.default_max_seq_length if task else None
    return settings


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def split_by_settings(runs: Sequence[dict[str, Any]]) -> tuple[list[str], list[tuple[str, list[dict[str, Any]]]]]:
    """Group ``runs`` so that each group differs in the seed only.

    Returns the keys that differ between groups and ``(label, runs)`` per group; the label names
    the group's values of those keys (``"train.lr=0.001"``), and is empty when there is one group.
    Runs without a readable recipe form their own group (their settings are unknown).
    """
    groups: dict[str, tuple[dict[str, Any] | None, list[dict[str, Any]]]] = {}
    for r in runs:
        settings = run_settings(r)
        key = "?" if settings is None else json.dumps(settings, sort_keys=True, default=str)
        groups.setdefault(key, (settings, []))[1].append(r)
    if len(groups) < 2:
        return [], [("", list(runs))]
    known = [s for s, _ in groups.values() if s is not None]
    all_keys = sorted({k for s in known for k in s})
    differing = [k for k in all_keys if len({json.dumps(s.get(k), default=str) for s in known}) > 1]
    out = []
    for settings, members in groups.values():
        label = ("settings unknown (no readable recipe.yaml)" if settings is None
                 else ", ".join(f"{k}={_shown(settings.get(k))}" for k in differing))
        out.append((label, members))
    out.sort(key=lambda group: group[0])
    return differing, out
