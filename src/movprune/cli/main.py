"""The ``movprune`` Typer application: one module per command, registered here."""

from __future__ import annotations

import typer

from movprune.cli.compare import compare_command
from movprune.cli.export import export_command
from movprune.cli.inspect import inspect_command
from movprune.cli.run import run_command
from movprune.cli.sweep import sweep_command

app = typer.Typer(
    name="movprune",
    help="Prune BERT-family models (magnitude, movement, soft movement, L0, sensitivity) and compare the methods.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        import movprune

        typer.echo(f"movprune {movprune.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Prune BERT-family models and compare the methods."""


app.command("run")(run_command)
app.command("sweep")(sweep_command)
app.command("compare")(compare_command)
app.command("export")(export_command)
app.command("inspect")(inspect_command)


def main() -> None:
    """Console-script entry point."""
    app()
