"""What a table shows: a cell's text, column headers, the caption, and :func:`shown_rows`, the one
generator of cells that every text format (Rich, Markdown, LaTeX, CSV, JSON) renders from."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from movprune.experiments.compare.paper import PAPER_LABEL
from movprune.experiments.compare.table import WARNING_MARK, Cell, Comparison, Row, dense_pruner


def cell_text(cell: Cell | None, metric_names: Sequence[str], digits: int = 1, pm: str = "±",
              mark: str = WARNING_MARK) -> str:
    """``"82.1±0.4 / 88.0±0.3"`` (metrics in the task's order; no ± for a single seed), followed by
    ``mark`` when a run of the cell has warnings."""
    if cell is None:
        return "–"
    parts = []
    for m in metric_names:
        stat = cell.metrics.get(m)
        if stat is None:
            parts.append("?")
        elif stat.std is None:
            parts.append(f"{stat.mean:.{digits}f}")
        else:
            parts.append(f"{stat.mean:.{digits}f}{pm}{stat.std:.{digits}f}")
    return " / ".join(parts) + (f" {mark}" if cell.warnings else "")


def paper_text(values: dict[str, float] | None, metric_names: Sequence[str], digits: int = 1) -> str:
    """``"71.9/81.7"``, the paper's way."""
    if not values:
        return "–"
    return "/".join(f"{values[m]:.{digits}f}" for m in metric_names if m in values)


def columns(comparison: Comparison, paper: bool) -> list[tuple[str, str, str]]:
    """(kind, pruner, header) of every value column: ours, each followed by the paper's when shown."""
    cols = []
    with_paper = set(comparison.paper_pruners()) if paper else set()
    for p in comparison.pruners:
        name = pruner_header(comparison, p)
        cols.append(("ours", p, name))
        if p in with_paper:
            cols.append(("paper", p, f"{name} ({PAPER_LABEL})"))
    return cols


def pruner_header(comparison: Comparison, pruner: str) -> str:
    """The pruner's column header (``"dense (none)"`` for the method that keeps every weight)."""
    return "dense (none)" if pruner == dense_pruner(comparison) else pruner



def metrics_caption(comparison: Comparison) -> str:
    """What a cell holds: ``"cells: accuracy, mean ± std over seeds (n = 3)"``."""
    ns = sorted({c.metrics[m].n for row in comparison.rows for c in row.cells.values()
                 for m in c.metrics})
    if ns == [1]:
        over = "one seed each (no std)"
    else:
        over = "mean ± std over seeds (" + (f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}–{ns[-1]} per cell") + ")"
    return f"cells: {' / '.join(comparison.metric_names)} (%), {over}; best {comparison.headline} per row in bold"


@dataclass(frozen=True)
class ShownCell:
    """One value column of one row: ours (``cell``) or the paper's (``paper_values``), with its text."""

    kind: str  # "ours" or "paper", as in :func:`columns`
    pruner: str
    text: str
    best: bool
    #: Our runs at this level (None: no run of this pruner here). Only for ``kind == "ours"``.
    cell: Cell | None = None
    #: The paper's numbers at this level (None: the paper has none). Only for ``kind == "paper"``.
    paper_values: dict[str, float] | None = None


def shown_rows(comparison: Comparison, paper: bool, pm: str = "±", mark: str = WARNING_MARK
               ) -> Iterator[tuple[Row, list[ShownCell]]]:
    """Every row with its cells in :func:`columns` order (ours, each followed by the paper's when
    shown); ``pm`` and ``mark`` are the format's ± and warning mark in the cell text."""
    cols = columns(comparison, paper)
    for row in comparison.rows:
        shown = []
        for kind, p, _ in cols:
            if kind == "paper":
                values = row.paper.get(p)
                shown.append(ShownCell(kind, p, paper_text(values, comparison.metric_names), False,
                                       paper_values=values))
            else:
                cell = row.cells.get(p)
                shown.append(ShownCell(kind, p, cell_text(cell, comparison.metric_names, pm=pm, mark=mark),
                                       cell is not None and cell.best, cell=cell))
        yield row, shown
