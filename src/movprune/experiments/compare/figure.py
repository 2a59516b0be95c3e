"""The paper's Figure 2 from comparisons (matplotlib, imported only when a plot is drawn)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from movprune.experiments.compare.paper import PAPER_LABEL
from movprune.experiments.compare.table import Comparison, dense_pruner


def plot(comparisons: Sequence[Comparison], path: str | Path, paper: bool = False) -> Path:
    """The paper's Figure 2 for each comparison (one panel each): the headline metric against
    remaining weights on a log axis, a line per pruner (± std as error bars), dense as a dashed
    line; with ``paper``, the paper's points as dotted lines. Writes ``path`` (PNG by extension)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    path = Path(path)
    n = max(1, len(comparisons))
    # The paper's lines double the legend: beside the axes it cannot hide the points.
    legend_outside = paper and any(c.paper_pruners() for c in comparisons)
    fig, axes = plt.subplots(1, n, figsize=((8.0 if legend_outside else 5.5) * n, 4.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, comp in zip(axes[0], comparisons):
        metric = comp.headline
        dense = dense_pruner(comp)
        for i, p in enumerate(comp.pruners):
            color = colors[i % len(colors)]
            points = [(row.remaining_pct, row.cells[p].metrics[metric]) for row in comp.rows
                      if p in row.cells and metric in row.cells[p].metrics]
            if p == dense:
                for _, stat in points:
                    ax.axhline(stat.mean, color=color, linestyle="--", label="dense (none)")
                ref = [row.paper[p][metric] for row in comp.rows if paper and metric in row.paper.get(p, {})]
                for y in ref:
                    ax.axhline(y, color=color, linestyle=":", label=f"dense ({PAPER_LABEL})")
                continue
            if points:
                points.sort()
                ax.errorbar([x for x, _ in points], [s.mean for _, s in points],
                            yerr=[s.std or 0.0 for _, s in points], marker="o", capsize=3,
                            color=color, label=p)
            if paper:
                ref = sorted((row.remaining_pct, row.paper[p][metric]) for row in comp.rows
                             if metric in row.paper.get(p, {}))
                if ref:
                    ax.plot([x for x, _ in ref], [y for _, y in ref], linestyle=":", marker="x",
                            color=color, label=f"{p} ({PAPER_LABEL})")
        ax.set_xscale("log")
        levels = sorted({row.remaining_pct for row in comp.rows})
        ax.set_xticks(levels)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("remaining weights (%, log scale)")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(comp.title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if legend_outside:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        else:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
