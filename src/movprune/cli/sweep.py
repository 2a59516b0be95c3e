"""``movprune sweep``: one recipe over several pruning methods, remaining-weight levels and seeds."""

from __future__ import annotations

import shlex
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from movprune.cli.common import (
    WARNING_MARK,
    ProgressObserver,
    err,
    fail,
    out,
    pick_recipe,
    print_warnings,
    quiet_libraries,
    reported_errors,
)
from movprune.experiments.compare import level_label

EXIT_RUN_FAILED = 1


class _SweepProgress:
    """Prints one line per run and draws each run's training progress."""

    def __init__(self) -> None:
        self.current: ProgressObserver | None = None
        self.started = 0  # runs whose training progress was drawn here (in-process)

    def close(self) -> None:
        """Stop the current run's progress display (after Ctrl-C too)."""
        if self.current is not None:
            self.current.__exit__(None, None, None)
            self.current = None

    def on_run_start(self, index, total, run):
        grid = escape("".join(f", {key}={value}" for key, value in run.grid))
        err.print(f"[bold][{index + 1}/{total}][/] {escape(run.name)}: {run.method}, "
                  f"{level_label(run.remaining_pct)}, seed {run.seed}{grid}", highlight=False)
        self.current = ProgressObserver().__enter__()
        self.started += 1
        return self.current

    def on_run_end(self, index, total, outcome):
        self.close()
        if outcome.status == "skipped":
            err.print(f"[dim][{index + 1}/{total}] {escape(outcome.run.name)}: finished earlier, skipped[/]",
                      highlight=False)
        elif outcome.status == "locked":
            err.print(f"[yellow][{index + 1}/{total}] {escape(outcome.run.name)}: skipped, another process is "
                      f"running it[/] ({escape(str(outcome.error))})", highlight=False, soft_wrap=True)
        elif outcome.status == "finished" and self.current is None and not self.started:
            # Trained elsewhere (--jobs, --backend ray): one line as each run ends.
            err.print(f"[green][{index + 1}/{total}] {escape(outcome.run.name)}: finished[/] in "
                      f"{outcome.seconds:.0f} s",
                      highlight=False)
        elif outcome.status == "failed":
            err.print(f"[bold red][{index + 1}/{total}] {escape(outcome.run.name)} failed:[/] "
                      f"{escape(str(outcome.error))}",
                      highlight=False, soft_wrap=True)


def _headline(result) -> tuple[str, float] | None:
    names = result.headline_metrics
    return (names[0], result.metrics[names[0]]) if names and names[0] in result.metrics else None


def summary_table(outcomes, title: str) -> Table:
    """One row per run: status, target and measured remaining weights, headline metric, time."""
    headlines = {h[0] for o in outcomes if o.result is not None and (h := _headline(o.result))}
    shared = next(iter(headlines)) if len(headlines) == 1 else None
    table = Table(title=title, title_justify="left")
    table.add_column("run", no_wrap=True)
    table.add_column("status")
    table.add_column("remaining weights (target)")
    table.add_column("measured remaining %", justify="right", min_width=9)
    table.add_column(shared or "headline metric", justify="right")
    table.add_column("time", justify="right", no_wrap=True, min_width=5)
    styles = {"finished": "green", "skipped": "dim", "failed": "bold red", "locked": "yellow"}
    for o in outcomes:
        metric = measured = "-"
        if o.result is not None:
            headline = _headline(o.result)
            if headline:
                metric = f"{headline[1]:.2f}" if shared else f"{headline[0]} {headline[1]:.2f}"
            measured = f"{o.result.remaining_pct:.2f}"
            if o.result.warnings:
                metric += f" {WARNING_MARK}"
        table.add_row(o.run.name, f"[{styles[o.status]}]{o.status}[/]", level_label(o.run.remaining_pct, short=True),
                      measured, metric, f"{o.seconds:.0f} s" if o.status in ("finished", "failed") else "-")
    return table


def _backend(name: str, jobs: int, ray_address: str | None, cpus_per_run: float, gpus_per_run: float):
    """The backend the options ask for (None: in this process, one run after another)."""
    from movprune.experiments.sweep import backends

    ray_options = ray_address is not None or cpus_per_run != 1.0 or gpus_per_run != 0.0
    if name == "local":
        if ray_options:
            fail("--ray-address, --cpus-per-run and --gpus-per-run go with --backend ray")
        return backends.ProcessPoolBackend(jobs) if jobs > 1 else None
    if name == "ray":
        if jobs != 1:
            fail("--jobs is for the local backend; with --backend ray, Ray runs as many runs at once as "
                 "the cluster's CPUs/GPUs allow (see --cpus-per-run, --gpus-per-run)")
        return backends.RayBackend(ray_address, cpus_per_run, gpus_per_run)
    fail(f"--backend {name}: choose 'local' or 'ray'")


def sweep_command(
    recipe: Annotated[str | None, typer.Argument(
        metavar="RECIPE", show_default=False,
        help="YAML recipe (see src/movprune/recipes/). Default: ./movprune.yaml when it exists, else the "
             "shipped quickstart recipe. A first argument holding '=' is an override.")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(
        help="key=value overrides applied to every run, e.g. train.max_steps=200")] = None,
    sparsity: Annotated[str | None, typer.Option(
        "--sparsity", "--remaining", metavar="PCTS",
        help="Comma-separated REMAINING weights in %, as in the paper's tables: 3 keeps 3% of the "
             "encoder weights (97% sparse). Default: the recipe's pruner.remaining_pct.")] = None,
    pruners: Annotated[str | None, typer.Option(
        "--pruners", metavar="METHODS",
        help="Comma-separated pruning methods, e.g. magnitude,movement,soft_movement,l0; 'none' adds "
             "one dense run per seed. Default: the recipe's pruner.method.")] = None,
    seeds: Annotated[str | None, typer.Option(
        "--seeds", metavar="SEEDS", help="Comma-separated seeds, e.g. 1,2,3. Default: the recipe's seed.")] = None,
    grid: Annotated[list[str] | None, typer.Option(
        "--grid", metavar="KEY=V1,V2",
        help="Another axis: any recipe key that changes the numbers and its values, e.g. --grid "
             "train.max_steps=300,1000 (repeatable; values read as in key=value overrides; a list keeps its "
             "commas inside brackets: pruner.block_shape=[32,32],[64,64]).")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Re-run finished runs too (each old run stays until its new run has finished).")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Validate every combination and list the runs; train nothing.")] = False,
    backend: Annotated[str, typer.Option(
        "--backend", metavar="local|ray",
        help="Where runs train: 'local' (this machine; see --jobs) or 'ray' (each run a Ray task; "
             "needs pip install 'movprune[ray]' and a results folder every node can see).")] = "local",
    jobs: Annotated[int, typer.Option(
        "--jobs", "-j", min=1, help="local backend: runs trained at once, each in its own process "
                                    "(1: one after another in this process).")] = 1,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", metavar="ADDRESS",
        help="ray backend: the cluster to join ('auto', 'ray://head:10001'); default: start a local "
             "Ray instance for the sweep.")] = None,
    cpus_per_run: Annotated[float, typer.Option(
        "--cpus-per-run", help="ray backend: CPUs Ray reserves for each run.")] = 1.0,
    gpus_per_run: Annotated[float, typer.Option(
        "--gpus-per-run", help="ray backend: GPUs Ray reserves for each run (0.5 puts two runs on a GPU).")] = 0.0,
) -> None:
    """Run a recipe for every pruner x remaining-weights level x seed (x every --grid value).

    Runs go to <output_dir>/<recipe name>/<pruner>-r<remaining %>-s<seed>/ (r3 = 3% remaining, 97% sparse); --grid values follow in the name: movement-r10-s1-max_steps300.

    Resumable: finished runs are skipped untouched, unfinished ones continue from their newest checkpoint (or are redone when they have none). SIGTERM / Ctrl-C save the current run and stop the sweep; rerun the same command to go on. A failing run does not stop the others; the exit code is 1 when any run failed, 2 when the sweep is invalid.

    Runs train one after another in this process by default; --jobs N trains N at once on this machine, --backend ray runs each as a Ray task (see docs/multi-gpu.md).
    """  # noqa: E501 - Typer rewraps paragraphs only when each is on one line
    from movprune import results
    from movprune.distributed import launched_world_size
    from movprune.experiments import sweep

    if launched_world_size() > 1:
        fail("movprune sweep under torchrun/accelerate launch would run every combination on every "
             "process; run the sweep plainly (--jobs N or --backend ray for parallel runs), or launch "
             "single runs with torchrun (see docs/multi-gpu.md)")

    recipe_path, overrides, note = pick_recipe(recipe, overrides or [])
    if note:
        err.print(note, highlight=False, soft_wrap=True, markup=False)
    options = [f"{opt}={value}" for opt, value in (("--sparsity", sparsity), ("--pruners", pruners),
                                                   ("--seeds", seeds)) if value is not None]
    options += [f"--grid={axis}" for axis in grid or []]
    again = shlex.join(["movprune", "sweep", str(recipe_path), *overrides, *options])
    with reported_errors(resume_command=again):
        runner = _backend(backend, jobs, ray_address, cpus_per_run, gpus_per_run)
        levels, methods, seed_list = sweep.parse_axes(sparsity, pruners, seeds)
        grid_axes = sweep.parse_grid(grid or [])
        plan = sweep.plan_sweep(recipe_path, remaining_pcts=levels, methods=methods, seeds=seed_list,
                                overrides=overrides, grid=grid_axes)
        if not force:
            sweep.check_finished_recipes(plan, str(recipe_path))
        todo = sweep.pending(plan, force)
        sweep_dir = plan[0].run_dir.parent
        done = len(plan) - len(todo) if not force else sum(results.is_finished(r.run_dir) for r in plan)
        err.print(f"sweep: {len(plan)} runs in {sweep_dir}/: {len(todo)} to run, {done} finished earlier "
                  f"({'re-run: --force' if force else 'skipped'})", highlight=False, soft_wrap=True, markup=False)
        if dry_run:
            table = Table(title=f"sweep plan ({recipe_path})", title_justify="left")
            table.add_column("run", no_wrap=True)
            table.add_column("remaining weights (target)")
            table.add_column("status")
            for r in plan:
                table.add_row(r.name, level_label(r.remaining_pct, short=True),
                              "to run" if r in todo else "finished: skipped")
            out.print(table)
            return
        quiet_libraries()
        progress = _SweepProgress()
        try:
            outcomes = sweep.run_sweep(plan, force=force, observer=progress, backend=runner)
        finally:
            progress.close()
    out.print(summary_table(outcomes, f"sweep {sweep_dir}"))
    for o in outcomes:
        if o.result is not None:
            print_warnings(o.result)
    locked = [o for o in outcomes if o.status == "locked"]
    if locked:
        err.print(f"[yellow]{len(locked)} of {len(outcomes)} runs were skipped because another process is "
                  f"running them[/] ({escape(', '.join(o.run.name for o in locked))}); rerun this command when it "
                  "has finished to collect them", highlight=False, soft_wrap=True)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        err.print(f"[bold red]{len(failed)} of {len(outcomes)} runs failed[/]; rerun the same command "
                  "to retry them (finished runs are skipped)")
        raise typer.Exit(EXIT_RUN_FAILED)
    err.print(f"compare them with: movprune compare {sweep_dir}", highlight=False, markup=False)
