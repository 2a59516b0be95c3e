"""What a table shows: a cell's text, column headers, the caption, and :func:`shown_rows`, the one
generator of cells that every text format (Rich, Markdown, LaTeX, CSV, JSON) renders from. Columns
and rows are typed (:class:`~.table.Column`, :class:`~.table.Row`); their text is made here."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from movprune.experiments.compare.paper import PAPER_LABEL
from movprune.experiments.compare.table import (
    LEVEL,
    WARNING_MARK,
    Cell,
    Column,
    Comparison,
    Row,
    dense_column,
    value_text,
)


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


def columns(comparison: Comparison, paper: bool) -> list[tuple[str, Column, str]]:
    """(kind, column, header) of every value column: ours, each followed by the paper's when shown."""
    cols = []
    with_paper = set(comparison.paper_columns()) if paper else set()
    for c in comparison.columns:
        name = column_header(comparison, c)
        cols.append(("ours", c, name))
        if c in with_paper:
            cols.append(("paper", c, f"{name} ({PAPER_LABEL})"))
    return cols


def axes_text(axes: Sequence[tuple[str, object]]) -> str:
    """``"train.lr=0.0001, train.max_steps=300"``."""
    return ", ".join(f"{key}={value_text(value)}" for key, value in axes)


def column_label(column: Column) -> str:
    """A column's name in data formats: the method, then its other axes' values in brackets
    (``"movement [train.lr=0.0001]"``)."""
    return f"{column.method} [{axes_text(column.axes)}]" if column.axes else column.method


def column_header(comparison: Comparison, column: Column) -> str:
    """A column's header in tables: :func:`column_label`, ``"dense (none)"`` for the method that
    keeps every weight."""
    return "dense (none)" if column == dense_column(comparison) else column_label(column)


def row_header(comparison: Comparison) -> str:
    """The first column's header: ``"remaining weights"``, or the row axis's key."""
    return "remaining weights" if comparison.row_axis == LEVEL else comparison.row_axis


def footnotes(comparison: Comparison) -> list[str]:
    """What the :data:`WARNING_MARK` of a cell refers to: its runs' warnings, one per line."""
    return [f"{WARNING_MARK} {column_header(comparison, c)} at {row_text(row)}: {w}" for row in comparison.rows
            for c, cell in row.cells.items() for w in cell.warnings]


def row_text(row: Row) -> str:
    """A row named in a sentence: ``"10% remaining (90% sparse)"``, ``"train.max_steps=300"``."""
    return row.label if row.axis == LEVEL else f"{row.axis}={row.label}"


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
    column: Column
    #: The column's :func:`column_label` (data formats name cells by it).
    label: str
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
        for kind, c, _ in cols:
            if kind == "paper":
                values = row.paper.get(c.method)
                shown.append(ShownCell(kind, c, column_label(c), paper_text(values, comparison.metric_names), False,
                                       paper_values=values))
            else:
                cell = row.cells.get(c)
                text = cell_text(cell, comparison.metric_names, pm=pm, mark=mark)
                shown.append(ShownCell(kind, c, column_label(c), text, cell is not None and cell.best, cell=cell))
        yield row, shown
