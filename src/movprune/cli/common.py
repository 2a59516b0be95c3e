"""What every command shares: consoles, error reporting, progress display."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from movprune.errors import MovpruneError, RunInterrupted
from movprune.experiments.compare import WARNING_MARK
from movprune.io import storage_error

if TYPE_CHECKING:
    from movprune.results import RunResult

out = Console()
err = Console(stderr=True)

EXIT_USAGE = 2


def quiet_libraries() -> None:
    """Silence library chatter (newly initialised head warnings, progress bars of datasets)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


@contextlib.contextmanager
def reported_errors(resume_command: str | None = None) -> Iterator[None]:
    """Turn movprune's typed errors into a one-line message and exit code 2; Ctrl-C into 130; a run
    stopped by a signal after saving a checkpoint into 143 (SIGTERM) or 130 (Ctrl-C) and the
    ``resume_command`` that continues it."""
    try:
        yield
    except RunInterrupted as e:
        how = f"; resume with: {resume_command}" if resume_command else ""
        err.print(f"[yellow]interrupted[/]: {escape(str(e) + how)}", highlight=False, soft_wrap=True)
        raise typer.Exit(e.exit_code) from None
    except MovpruneError as e:
        for line in str(e).splitlines():
            err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    except OSError as e:
        typed = storage_error(e)
        if typed is None:
            raise
        err.print(f"[bold red]error:[/] {escape(str(typed))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: nothing was published (the run folder has no result.json; "
                  "a finished run that --force was replacing is kept as it was)")
        raise typer.Exit(130) from None


class ProgressObserver:
    """Draws the training loop's progress on stderr: loss, remaining %, throughput."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=err, transient=False, disable=not err.is_terminal and "MOVPRUNE_PROGRESS" not in os.environ,
        )
        self.task_id = None
        self.started = time.perf_counter()

    def __enter__(self) -> ProgressObserver:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def on_phase(self, text: str) -> None:
        err.print(f"[dim]{escape(text)}…[/]")

    def on_start(self, total_steps: int, run_dir: Path) -> None:
        err.print(f"[dim]training {total_steps} steps → {escape(str(run_dir))}[/]")
        self.task_id = self.progress.add_task("train", total=total_steps, info="")

    def on_step(self, step: int, values: dict[str, float]) -> None:
        # The task loss: the total also holds lambda * penalty, which a controller may drive far
        # from the task's scale (metrics.jsonl keeps every part).
        info = (f"loss {values.get('loss_task', values['loss']):.3f} · "
                f"remaining {values.get('remaining_pct', 100):.1f}% · "
                f"{values['samples_per_second']:.0f} samples/s")
        if self.progress.disable:
            err.print(f"[dim]step {step}: {info}[/]", highlight=False)
        elif self.task_id is not None:
            self.progress.update(self.task_id, completed=step, info=info)

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items())
        err.print(f"[dim]step {step}: {escape(shown)}[/]")


#: The recipe ``movprune sweep`` takes from the current folder when none is named.
LOCAL_RECIPE = Path("movprune.yaml")


def shipped_quickstart() -> Path:
    """The quickstart recipe shipped inside the package."""
    from importlib import resources

    return Path(str(resources.files("movprune").joinpath("recipes", "quickstart.yaml")))


def pick_recipe(first: str | None, overrides: list[str]) -> tuple[Path, list[str], str | None]:
    """(recipe path, overrides, a note saying which recipe was taken when none was named).

    A first positional holding ``=`` is an override, not a recipe. With no recipe named, take
    ``./movprune.yaml`` when it exists, else the shipped quickstart recipe.
    """
    if first is not None and "=" not in first:
        return Path(first), overrides, None
    overrides = ([first] if first is not None else []) + overrides
    if LOCAL_RECIPE.is_file():
        return LOCAL_RECIPE, overrides, f"recipe: ./{LOCAL_RECIPE} (no recipe named; found in this folder)"
    quickstart = shipped_quickstart()
    return quickstart, overrides, (f"recipe: the shipped quickstart, {quickstart} (no recipe named and no "
                                   f"./{LOCAL_RECIPE} here)")


def print_warnings(result: RunResult) -> None:
    """Print a result's ``warnings`` (a suspicious result is never shown as a normal one)."""
    for warning in result.warnings:
        text = warning if isinstance(warning, str) else warning.get("message", warning)
        err.print(f"[bold yellow]warning {WARNING_MARK}:[/] {escape(str(result.name or ''))}: {escape(str(text))}",
                  highlight=False, soft_wrap=True)


def fail(message: str) -> None:
    """Print ``message`` as an error and exit with code 2."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_USAGE)
