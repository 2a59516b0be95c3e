"""Finished runs of a sweep: was each trained with the recipe the sweep asks for? Skipping one
trained with another experiment would report it as this sweep's result. "The same experiment" is
:mod:`movprune.identity`'s rule: output and operational keys may differ."""

from __future__ import annotations

from movprune import identity, results
from movprune.errors import MovpruneError, RecipeError
from movprune.experiments.sweep.plan import SweepRun


def recipe_differences(run: SweepRun) -> list[str] | None:
    """How the recipe a finished run was trained with differs from the one the sweep asks for, in
    the keys that change the numbers: one ``key: was -> asked`` per key; None when the run is not
    finished. A ``recipe.yaml`` that cannot be read counts as a difference."""
    if not results.is_finished(run.run_dir):
        return None
    try:
        saved = identity.load_saved_recipe(run.run_dir)
    except MovpruneError:
        return [f"{results.RECIPE_FILE}: missing or not a valid recipe"]
    return identity.describe_differences(saved, run.recipe, identity.same_experiment(saved, run.recipe))


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
