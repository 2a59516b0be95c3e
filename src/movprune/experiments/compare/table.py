"""What a comparison is: tables of rows (remaining-weights levels, or another axis's values) of
cells (one column's runs at one row, as mean ± std over seeds), and how a level is named. Rows and
columns are typed values (:class:`Column`); text is made from them in :mod:`.render` only."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

#: The remaining-weights level of a run that keeps every weight.
DENSE_PCT = 100.0
#: The row (or column) axis of the remaining-weights level (the target, else the measured %).
LEVEL = "level"
#: The column (or row) axis of the pruning method (with its pattern and remedies).
METHOD = "method"
#: Marks a cell averaging a run whose result.json has warnings (a footnote says which).
WARNING_MARK = "⚠"


def level_label(remaining_pct: float | None, short: bool = False) -> str:
    """``3`` -> ``"3% remaining (97% sparse)"`` (``short``: ``"3% (97% sparse)"``);
    ``100`` -> ``"100% (dense)"``."""
    if remaining_pct is None:
        return "set by the method"
    if remaining_pct >= DENSE_PCT:
        return "100% (dense)"
    sparse = round(100 - remaining_pct, 4)
    return f"{remaining_pct:g}%{'' if short else ' remaining'} ({sparse:g}% sparse)"


def value_text(value: Any) -> str:
    """An axis value as shown: a string as it is, anything else as JSON (``3e-05``, ``[32, 32]``)."""
    return value if isinstance(value, str) else json.dumps(value, default=list)


class Column(NamedTuple):
    """One column of a table: a method (``results.pruner_label`` with its remedies) and the values
    of the other axes that set its runs apart, as ``(key, value)`` pairs (lists as tuples)."""

    method: str
    axes: tuple[tuple[str, Any], ...] = ()


@dataclass
class Stat:
    """Mean and sample standard deviation over seeds (``std`` is None for a single run)."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        """The statistic of ``values`` (at least one)."""
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None,
                   len(values))


@dataclass
class Cell:
    """The runs of one column at one row."""

    column: Column
    runs: list[dict[str, Any]]
    metrics: dict[str, Stat]
    measured_remaining_pct: Stat
    #: The remaining-weights level its runs share (None when they differ).
    level: float | None = None
    best: bool = False

    @property
    def seeds(self) -> list[int]:
        """Seeds of the runs, in order."""
        return sorted(r["seed"] for r in self.runs)

    @property
    def warnings(self) -> list[str]:
        """``"<run folder>: <message>"`` for every warning in the runs' ``result.json``."""
        return [f"{r['run_dir']}: {w if isinstance(w, str) else w.get('message', w)}"
                for r in self.runs for w in (r.get("warnings") or [])]


@dataclass
class Row:
    """One value of the row axis: a remaining-weights level (``axis`` :data:`LEVEL`) or another
    key's value (``train.max_steps`` 300)."""

    value: Any
    cells: dict[Column, Cell]
    #: The paper's numbers at this level: method -> metric name -> value (level rows only).
    paper: dict[str, dict[str, float]] = field(default_factory=dict)
    axis: str = LEVEL

    @property
    def remaining_pct(self) -> float | None:
        """The level of a level row (None for rows of another axis)."""
        return self.value if self.axis == LEVEL else None

    @property
    def label(self) -> str:
        """``"10% remaining (90% sparse)"``, ``"100% (dense)"``; another axis's value as text."""
        return level_label(self.value) if self.axis == LEVEL else value_text(self.value)


@dataclass
class Comparison:
    """One table: every run of one task, model and distillation setting."""

    task: str
    model: str
    distill_teacher: str | None
    metric_names: list[str]
    columns: list[Column]
    rows: list[Row]
    warnings: list[str] = field(default_factory=list)
    #: The axes laid out as rows and as columns (:data:`LEVEL`, :data:`METHOD` or a recipe key).
    row_axis: str = LEVEL
    column_axis: str = METHOD

    @property
    def title(self) -> str:
        """``"sst2 · minilm-l6 · no distillation"``."""
        distill = f"distilled from {self.distill_teacher}" if self.distill_teacher else "no distillation"
        return f"{self.task} · {self.model} · {distill}"

    @property
    def headline(self) -> str:
        """The metric lines are plotted with and bold is decided on (the task's first)."""
        return self.metric_names[0]

    def paper_columns(self) -> list[Column]:
        """Columns with at least one of the paper's numbers in this table (a plain method's)."""
        return [c for c in self.columns if not c.axes and any(c.method in row.paper for row in self.rows)]


def dense_column(comparison: Comparison) -> Column | None:
    """The column whose runs keep every weight (it only appears in the 100% row)."""
    if comparison.row_axis != LEVEL:
        return None
    for c in comparison.columns:
        levels = {row.value for row in comparison.rows if c in row.cells}
        if levels == {DENSE_PCT}:
            return c
    return None
