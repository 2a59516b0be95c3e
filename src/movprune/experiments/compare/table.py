"""What a comparison is: tables of rows (remaining-weights levels) of cells (a pruner's runs at one
level, as mean ± std over seeds), and how a level is named."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: The remaining-weights level of a run that keeps every weight.
DENSE_PCT = 100.0
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
    """The runs of one pruner at one remaining-weights level."""

    pruner: str
    runs: list[dict[str, Any]]
    metrics: dict[str, Stat]
    measured_remaining_pct: Stat
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
    """One remaining-weights level."""

    remaining_pct: float
    cells: dict[str, Cell]
    #: The paper's numbers at this level: pruner -> metric name -> value.
    paper: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``"10% remaining (90% sparse)"`` or ``"100% (dense)"``."""
        return level_label(self.remaining_pct)


@dataclass
class Comparison:
    """One table: every run of one task, model and distillation setting."""

    task: str
    model: str
    distill_teacher: str | None
    metric_names: list[str]
    pruners: list[str]
    rows: list[Row]
    warnings: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        """``"sst2 · minilm-l6 · no distillation"``."""
        distill = f"distilled from {self.distill_teacher}" if self.distill_teacher else "no distillation"
        return f"{self.task} · {self.model} · {distill}"

    @property
    def headline(self) -> str:
        """The metric lines are plotted with and bold is decided on (the task's first)."""
        return self.metric_names[0]

    def paper_pruners(self) -> list[str]:
        """Pruners with at least one of the paper's numbers in this table."""
        return [p for p in self.pruners if any(p in row.paper for row in self.rows)]

    @property
    def footnotes(self) -> list[str]:
        """What the :data:`WARNING_MARK` of a cell refers to: its runs' warnings, one per line."""
        return [f"{WARNING_MARK} {p} at {row.label}: {w}" for row in self.rows
                for p, cell in row.cells.items() for w in cell.warnings]



def dense_pruner(comparison: Comparison) -> str | None:
    """The pruner whose runs keep every weight (it only appears in the 100% row)."""
    for p in comparison.pruners:
        levels = {row.remaining_pct for row in comparison.rows if p in row.cells}
        if levels == {DENSE_PCT}:
            return p
    return None
