"""Finished runs of a sweep: was each trained with the recipe the sweep asks for? Skipping one
trained with another recipe would report it as this sweep's result."""

from __future__ import annotations

import json
from typing import Any

from movprune import results
from movprune.errors import MovpruneError, RecipeError
from movprune.experiments.sweep.plan import SweepRun
from movprune.recipe import read_recipe_data, validate_recipe

#: Recipe keys that differ between runs of one sweep by construction.
_OWN_KEYS = ("name", "output_dir")


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return flat


def recipe_differences(run: SweepRun) -> list[str] | None:
    """How the recipe a finished run was trained with differs from the one the sweep asks for
    (``name``/``output_dir`` aside): one ``key: was -> asked`` per key; None when the run is not
    finished. A ``recipe.yaml`` that cannot be read counts as a difference."""
    if not results.is_finished(run.run_dir):
        return None
    path = run.run_dir / results.RECIPE_FILE
    try:
        saved = validate_recipe(read_recipe_data(path), str(path)).model_dump(mode="json")
    except MovpruneError:
        return [f"{results.RECIPE_FILE}: missing or not a valid recipe"]
    asked = _flat(run.recipe.model_dump(mode="json"))
    saved = _flat(saved)
    return [f"{key}: {json.dumps(saved.get(key))} -> {json.dumps(asked.get(key))}"
            for key in sorted(set(asked) | set(saved))
            if key.split(".")[0] not in _OWN_KEYS and saved.get(key) != asked.get(key)]


def check_finished_recipes(plan: list[SweepRun], source: str) -> None:
    """Refuse to skip a finished run trained with another recipe than the one asked: it would be
    reported as this sweep's result. Raises :class:`RecipeError` naming the runs and keys."""
    problems = []
    for run in plan:
        differences = recipe_differences(run)
        if differences:
            problems.append(f"{run.run_dir} finished with another recipe ({'; '.join(differences)}); "
                            "pass --force to re-run it with this one, or set name=<other sweep name> to "
                            "sweep into another folder")
    if problems:
        raise RecipeError(source, problems)
