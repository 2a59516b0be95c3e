"""``movprune inspect``: where a pruned model keeps its weights, per layer and matrix type."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from movprune.cli.common import out, reported_errors


def breakdown_table(b) -> Table:
    """A Rich table: a row per layer, a column per matrix type, totals in the last row/column."""
    run = b.run
    title = f"{run.get('name', '')}: remaining weights (%) by layer and matrix"
    details = [f"{k} {run[k]}" for k in ("task", "pruner") if run.get(k)]
    if run.get("target_remaining_pct") is not None:
        details.append(f"target {run['target_remaining_pct']:g}%")
    caption = " · ".join(details + [f"from {b.source}"])
    if not b.weighted:
        caption += " · totals are plain means (matrix sizes unknown: no model/ folder)"
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    table.add_column("layer", justify="right")
    for col in b.columns:
        table.add_column(col, justify="right")
    table.add_column("layer total", justify="right", style="bold")
    units = [(key, label) for key, label in (("heads", "heads left"), ("neurons", "neurons left"))
             if any(key in s for s in b.structure.values())]
    for _, label in units:
        table.add_column(label, justify="right")

    def left(entries, key):
        found = [e for e in entries if key in e]
        return f"{sum(e[key + '_left'] for e in found)}/{sum(e[key] for e in found)}" if found else ""

    for layer, cells in b.cells.items():
        table.add_row("-" if layer is None else str(layer),
                      *(f"{cells[c]:.1f}" if c in cells else "" for c in b.columns),
                      f"{b.layer_totals[layer]:.1f}",
                      *(left([b.structure.get(layer, {})], key) for key, _ in units))
    table.add_section()
    table.add_row("all", *(f"{b.column_totals[c]:.1f}" for c in b.columns), f"{b.total:.2f}",
                  *(left(list(b.structure.values()), key) for key, _ in units), style="bold")
    return table


class InspectFormat(str, Enum):
    """Output formats of ``movprune inspect``."""

    table = "table"
    json = "json"


def inspect_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder (holding result.json or model/).")],
    fmt: Annotated[InspectFormat, typer.Option("--format", help="table (for people) or json (for "
                                               "scripts: the same numbers).")] = InspectFormat.table,
) -> None:
    """Show the remaining weights of a run per layer and per matrix type (Q, K, V or ModernBERT's
    fused QKV, attention output, FFN in, FFN out)."""
    with reported_errors():
        from movprune.experiments.inspect import breakdown_dict, inspect_run

        b = inspect_run(run_dir)
        if fmt is InspectFormat.json:
            typer.echo(json.dumps(breakdown_dict(b), indent=2))
        else:
            out.print(breakdown_table(b))
