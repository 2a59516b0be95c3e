"""The paper's Figure 2 from comparisons (matplotlib, imported only when a plot is drawn)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from movprune.experiments.compare.paper import PAPER_LABEL
from movprune.experiments.compare.render import column_header
from movprune.experiments.compare.table import LEVEL, Comparison, dense_column


def _numeric(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def plot(comparisons: Sequence[Comparison], path: str | Path, paper: bool = False) -> Path:
    """The paper's Figure 2 for each comparison (one panel each): the headline metric against its
    rows' axis (remaining weights on a log axis, or another key's values: accuracy against
    ``train.max_steps``), a line per column (± std as error bars), dense as a dashed line on level
    rows; with ``paper``, the paper's points as dotted lines. Writes ``path`` (PNG by extension)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    path = Path(path)
    n = max(1, len(comparisons))
    # The paper's lines double the legend: beside the axes it cannot hide the points.
    legend_outside = paper and any(c.paper_columns() for c in comparisons)
    fig, axes = plt.subplots(1, n, figsize=((8.0 if legend_outside else 5.5) * n, 4.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, comp in zip(axes[0], comparisons):
        metric = comp.headline
        dense = dense_column(comp)
        numeric = all(_numeric(row.value) for row in comp.rows)
        positive = numeric and all(row.value > 0 for row in comp.rows)
        # Values that are not numbers (a pattern, a flag) sit at evenly spaced ticks.
        x_of = {id(row): (row.value if numeric else i) for i, row in enumerate(comp.rows)}
        for i, p in enumerate(comp.columns):
            color = colors[i % len(colors)]
            label = column_header(comp, p)
            points = [(x_of[id(row)], row.cells[p].metrics[metric]) for row in comp.rows
                      if p in row.cells and metric in row.cells[p].metrics]
            if p == dense:
                for _, stat in points:
                    ax.axhline(stat.mean, color=color, linestyle="--", label="dense (none)")
                ref = [row.paper[p.method][metric] for row in comp.rows
                       if paper and metric in row.paper.get(p.method, {})]
                for y in ref:
                    ax.axhline(y, color=color, linestyle=":", label=f"dense ({PAPER_LABEL})")
                continue
            if points:
                points.sort()
                ax.errorbar([x for x, _ in points], [s.mean for _, s in points],
                            yerr=[s.std or 0.0 for _, s in points], marker="o", capsize=3,
                            color=color, label=label)
            if paper and not p.axes:
                ref = sorted((row.value, row.paper[p.method][metric]) for row in comp.rows
                             if metric in row.paper.get(p.method, {}))
                if ref:
                    ax.plot([x for x, _ in ref], [y for _, y in ref], linestyle=":", marker="x",
                            color=color, label=f"{label} ({PAPER_LABEL})")
        if numeric:
            if positive:
                ax.set_xscale("log")
            ax.set_xticks(sorted({row.value for row in comp.rows}))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            ax.set_xticks(range(len(comp.rows)), [row.label for row in comp.rows])
        scale = ", log scale" if positive else ""
        ax.set_xlabel(f"remaining weights (%{scale})" if comp.row_axis == LEVEL else f"{comp.row_axis}{scale}")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(comp.title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if legend_outside:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        else:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Save ``fig`` to ``path`` through a hidden sibling and a rename (never a half-written image), and
    close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)
    return path
