"""``movprune run``: one fine-pruning run from a recipe."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from movprune.cli.common import ProgressObserver, err, fail, out, print_warnings, quiet_libraries, reported_errors

if TYPE_CHECKING:
    from movprune.results import RunResult


def result_table(result: RunResult) -> Table:
    """A one-run summary: metrics, target and measured remaining weights, time."""
    table = Table(title=f"{result.name}  ({result.run_dir})", title_justify="left")
    for col in ("task", "pruner", "target remaining %", "remaining %", *result.metrics, "steps",
                "train time"):
        table.add_column(col, justify="right" if col not in ("task", "pruner") else "left")
    target = result.target_remaining_pct
    table.add_row(
        result.task, result.pruner, "-" if target is None else f"{target:g}",
        f"{result.remaining_pct:.2f}", *(f"{v:.2f}" for v in result.metrics.values()),
        str(result.steps), f"{result.train_seconds:.0f} s")
    return table


def run_command(
    recipe: Annotated[Path, typer.Argument(help="YAML recipe (see src/movprune/recipes/).")],
    overrides: Annotated[list[str] | None, typer.Argument(
        help="key=value overrides, e.g. train.max_steps=20 pruner.remaining_pct=3")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace a finished run of the same name (the old one stays until the new one "
                        "has finished).")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Validate and print the resolved recipe; train nothing.")] = False,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue an unfinished run from its newest checkpoint (starts afresh when it has "
        "none; a finished run is left as it is).")] = False,
) -> None:
    """Fine-prune a model as the recipe says and write <output_dir>/<name>/."""
    if resume and force:
        fail("--resume continues a run and --force starts it over: pass one of them")
    again = shlex.join(["movprune", "run", str(recipe), *(overrides or []), "--resume"])
    with reported_errors(resume_command=again):
        from movprune.recipe import load_recipe

        resolved = load_recipe(recipe, overrides or [])
        quiet_libraries()
        from movprune.distributed import launched_as_main
        from movprune.training.loop import SilentObserver, check_inputs, run

        check_inputs(resolved, str(recipe), resume=resume)
        if dry_run and not launched_as_main():
            return
        if dry_run:
            out.print(resolved.to_yaml(), end="", highlight=False, markup=False)
            err.print(f"[green]ok[/]: {escape(str(recipe))} is valid; results would go to "
                      f"{escape(str(resolved.run_dir))}/")
            return
        if not launched_as_main():  # one of several processes of a launch: rank 0 reports
            run(resolved, force=force, resume=resume, observer=SilentObserver())
            return
        with ProgressObserver() as observer:
            result = run(resolved, force=force, resume=resume, observer=observer)
        out.print(result_table(result))
        print_warnings(result)
