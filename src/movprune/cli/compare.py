"""``movprune compare``: the paper's Table 2 and Figure 2 from finished run folders."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from movprune.cli.common import err, fail, out, reported_errors


class Format(str, Enum):
    """Output formats of ``movprune compare``."""

    table = "table"
    markdown = "markdown"
    csv = "csv"
    json = "json"
    latex = "latex"


def rich_table(comparison, paper: bool) -> Table:
    """A Rich table: a row per remaining-weights level, a column per pruner, best per row in bold;
    with ``paper``, the paper's number under ours in cyan."""
    from movprune.experiments import compare

    caption = compare.metrics_caption(comparison)
    if compare.footnotes(comparison):
        caption += f"; {compare.WARNING_MARK}: a run of the cell has warnings (listed below)"
    if paper and comparison.paper_columns():
        caption += "; cyan: the paper's BERT-base numbers (Sanh et al. 2020)"
    table = Table(title=comparison.title, title_justify="left", caption=caption, caption_justify="left")
    table.add_column(compare.row_header(comparison), no_wrap=True)
    for column in comparison.columns:
        table.add_column(compare.column_header(comparison, column), justify="right")
    for row, shown in compare.shown_rows(comparison, paper):
        cells: list[Text] = []
        for c in shown:
            if c.kind == "ours":
                cells.append(Text(c.text, style="bold" if c.best else ""))
            elif c.paper_values is not None:  # the paper's number goes under ours, in its column
                cells[-1].append("\npaper " + c.text, style="cyan")
        table.add_row(row.label, *cells)
    return table


def compare_command(
    dirs: Annotated[list[Path], typer.Argument(
        help="Run folders or folders holding them (searched recursively), e.g. results/my-sweep.")],
    fmt: Annotated[Format, typer.Option(
        "--format", "-f", help="table (Rich), markdown, csv (long format), json or latex.")] = Format.table,
    plot: Annotated[Path | None, typer.Option(
        "--plot", metavar="FILE.png",
        help="Also draw the headline metric against remaining weights (log axis; or against --x), a line per "
             "pruner.")] = None,
    plot_speed: Annotated[Path | None, typer.Option(
        "--plot-speed", metavar="FILE.png",
        help="Also draw the headline metric against measured speed-up (needs --speed), a line per "
             "method × pattern, dense as the reference.")] = None,
    speed: Annotated[Path | None, typer.Option(
        "--speed", metavar="SPEED.json", help="Timings from benchmarks/sweep_speed.py, for --plot-speed.")] = None,
    paper: Annotated[bool, typer.Option(
        "--paper", help="Show the paper's numbers (BERT-base; SQuAD, MNLI, QQP) beside ours where task "
                        "and remaining weights match.")] = False,
    figure: Annotated[str | None, typer.Option(
        "--figure", metavar="weights|layers",
        help="Make --plot draw one of the paper's analysis figures from the runs' saved weights instead: "
             "'weights' (Figure 3, histograms of the kept weights' values, a panel per method and level) "
             "or 'layers' (Figure 4, remaining % per layer and matrix kind, a line per run); its data "
             "goes to FILE.csv beside FILE.png.")] = None,
    rows: Annotated[str, typer.Option(
        "--rows", metavar="KEY", help="The rows' axis: 'level' (remaining weights) or a recipe key a sweep "
                                      "varied, e.g. train.max_steps.")] = "level",
    columns: Annotated[str, typer.Option(
        "--columns", metavar="KEY", help="The columns' axis beside the method: 'method' alone, or a recipe "
                                         "key, e.g. pruner.pattern (a column per method and value).")] = "method",
    x: Annotated[str | None, typer.Option(
        "--x", metavar="KEY", help="--plot's x axis: a recipe key (train.max_steps: the metric against "
                                   "budget, a line per method). Default: the rows' axis.")] = None,
) -> None:
    """Compare finished runs like the paper's Table 2: a row per remaining-weights level (3 = 3% of the encoder weights kept, 97% sparse), a column per pruner, cells = the task's metrics as mean ± std over seeds, best per row in bold.

    Runs are grouped into one table per task, model and distillation teacher. Unfinished or corrupt run folders are skipped with a warning.

    Any recipe key a sweep varied (--grid) can be the rows (--rows train.max_steps), part of the columns (--columns pruner.pattern) or the plot's x (--x train.max_steps).
    """  # noqa: E501 - Typer rewraps paragraphs only when each is on one line
    with reported_errors():
        from movprune.experiments import compare
        from movprune.experiments.compare import weight_plots

        if figure is not None and (problem := weight_plots.figure_problem(figure, plot)):
            fail(problem)
        if x is not None and (plot is None or figure is not None):
            fail(f"--x {x}: the x axis of --plot's metric plot; give --plot FILE.png"
                 + (" and leave out --figure (its figures have their own axes)" if figure is not None else ""))
        if figure is not None and rows not in ("level", "pruner.remaining_pct"):
            fail(f"--figure {figure} with --rows {rows}: a figure's panels are the remaining-weights levels; "
                 "leave out --rows, or pass only the folders of one value of it")
        scan = compare.scan_runs(dirs)
        for warning in scan.warnings:
            err.print(f"[yellow]warning:[/] {escape(str(warning))}", highlight=False, soft_wrap=True)
        if not scan.results:
            fail(f"no finished runs (folders with result.json) under {', '.join(map(str, dirs))}")
        rows, columns = compare.check_axes(rows, columns)
        if x is not None:
            x = compare.check_axes(x, columns, row_option="--x")[0]
        comparisons = compare.build_comparisons(scan.results, paper=paper, rows=rows, columns=columns)
        for comp in comparisons:
            for warning in comp.warnings:
                err.print(f"[yellow]warning:[/] {escape(str(warning))}", highlight=False, soft_wrap=True)
            if paper and not comp.paper_columns():
                err.print(f"[yellow]note:[/] --paper: the paper has no numbers for {escape(comp.task)} at these "
                          f"levels (it reports {', '.join(compare.paper_tasks())} at 3%, 10% and dense)",
                          highlight=False, soft_wrap=True)
        if paper and any(comp.paper_columns() for comp in comparisons):
            err.print("[dim]the paper's numbers (Sanh et al. 2020, Tables 2-3) are BERT-base fine-pruned for "
                      "6-10 epochs: a reference point, not comparable in absolute terms with other models "
                      "or training budgets[/]", highlight=False, soft_wrap=True)
        if fmt is Format.table:
            for comp in comparisons:
                out.print(rich_table(comp, paper))
                for note in compare.footnotes(comp):
                    out.print(note, highlight=False, markup=False, soft_wrap=True)
        else:
            render = {Format.markdown: compare.to_markdown, Format.csv: compare.to_csv,
                      Format.json: compare.to_json, Format.latex: compare.to_latex}[fmt]
            out.print(render(comparisons, paper), end="", markup=False, highlight=False, soft_wrap=True)
        if plot is not None and figure is not None:
            image, data = weight_plots.draw_figure(figure, comparisons, plot)
            err.print(f"[green]{figure} figure[/] → {escape(str(image))}, data → {escape(str(data))}",
                      highlight=False, soft_wrap=True)
        elif plot is not None:
            drawn = comparisons if x is None or x == rows else compare.build_comparisons(
                scan.results, paper=paper, rows=x, columns=columns)
            written = compare.plot(drawn, plot, paper=paper)
            err.print(f"[green]plot[/] → {escape(str(written))}", highlight=False)
        if plot_speed is not None:
            from movprune.experiments.compare import speed_plot

            if speed is None:
                fail("--plot-speed needs --speed SPEED.json (made by benchmarks/sweep_speed.py)")
            written = speed_plot.plot_speed(speed_plot.load_speed(speed), plot_speed,
                                            [r["run_dir"] for r in scan.results])
            err.print(f"[green]speed plot[/] → {escape(str(written))}", highlight=False)
