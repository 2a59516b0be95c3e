"""Drawing the paper's analysis figures (``movprune compare --figure weights|layers --plot FILE.png``)
from :mod:`.weight_figures`' data, and writing that data as ``FILE.csv`` beside the image.

* ``weights`` (Figure 3): a panel per comparison cell (method variant x remaining-weights level,
  seeds pooled: their counts share the bins, so they add), the kept weights' values as a histogram.
* ``layers`` (Figure 4): remaining % against the layer, a panel per matrix kind plus one over all
  of a layer's matrices, a line per run.

Pure logic: returns the written paths; the CLI prints. matplotlib is imported only here.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from movprune.errors import RunFailedError
from movprune.experiments.compare import weight_figures as data
from movprune.experiments.compare.figure import save_figure
from movprune.experiments.compare.table import Comparison, level_label
from movprune.io import atomic_write_text

FIGURES = ("weights", "layers")
_PANELS_PER_ROW = 4


def figure_problem(figure: str, plot: Path | None) -> str | None:
    """Why ``--figure figure`` with ``--plot plot`` cannot be drawn (one line), else None."""
    if figure not in FIGURES:
        return f"--figure {figure!r}: not a figure; use --figure weights (Figure 3, the kept weights' " \
               f"values) or --figure layers (Figure 4, remaining % per layer and matrix kind)"
    if plot is None:
        return f"--figure {figure} draws into the file of --plot: add --plot FILE.png (its data goes to FILE.csv)"
    if plot.suffix.lower() == ".csv":
        return f"--plot {plot}: the figure's data is written to FILE.csv beside the image; give an image " \
               f"file (FILE.png, .svg or .pdf)"
    return None


def data_path(plot: str | Path) -> Path:
    """Where the data of the figure drawn into ``plot`` goes: ``FILE.csv`` beside ``FILE.png``."""
    return Path(plot).with_suffix(".csv")


def draw_figure(figure: str, comparisons: Sequence[Comparison], plot: str | Path) -> tuple[Path, Path]:
    """Draw ``figure`` ("weights" or "layers") of the runs of ``comparisons`` into ``plot`` and its
    data into :func:`data_path`; returns both paths."""
    problem = figure_problem(figure, Path(plot))
    if problem:
        raise RunFailedError(problem)
    if figure == "weights":
        histograms = data.weight_histograms(comparisons)
        records, fields = histograms.records(), data.HISTOGRAM_FIELDS
        fig = _weights(histograms)
    else:
        counts = data.layer_remaining(comparisons)
        records, fields = data.layer_records(counts), data.LAYER_FIELDS
        fig = _layers(counts)
    written = _save(fig, Path(plot))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    atomic_write_text(data_path(plot), text.getvalue())
    return written, data_path(plot)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(n: int, width: float, height: float):
    plt = _pyplot()
    cols = min(n, _PANELS_PER_ROW)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(width * cols, 6.5), height * rows), squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _weights(h: data.Histograms):
    cells: dict[tuple[str, float, str], list[int]] = {}
    for i, run in enumerate(h.runs):
        cells.setdefault((run.title, run.level_pct, run.method), []).append(i)
    tables = len({run.title for run in h.runs}) > 1
    # Tail bins (beyond the central quantile) are written to the CSV but not drawn: one of them can be
    # a hundred times wider than the others.
    tails = len(h.edges) == data.CENTRAL_BINS + 3
    inner = slice(1, -1) if tails else slice(None)
    edges = h.edges[1:-1] if tails else h.edges
    fig, axes = _grid(len(cells), 3.6, 2.9)
    for ax, ((title, level, method), members) in zip(axes, cells.items()):
        counts = sum(h.counts[i] for i in members)
        ax.stairs(counts[inner], edges, fill=True, alpha=0.8)
        kept = sum(h.runs[i].remaining_pct for i in members) / len(members)
        seeds = f" · {len(members)} seeds pooled" if len(members) > 1 else ""
        ax.set_title(f"{method}\n{level_label(level, short=True)} target, {kept:.2f}% kept{seeds}"
                     + (f"\n{title}" if tables else ""), fontsize=9)
        if tails:
            beyond = int(counts[0] + counts[-1])
            ax.text(0.98, 0.95, f"{beyond:,} beyond ±{edges[-1]:.3g}", transform=ax.transAxes,
                    ha="right", va="top", fontsize=7)
        ax.set_xlim(edges[0], edges[-1])
        ax.axvline(0.0, color="grey", linewidth=0.5)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("kept weight value", fontsize=8)
        ax.set_ylabel("weights per bin", fontsize=8)
    for ax in axes[len(cells):]:
        ax.set_visible(False)
    width = edges[1] - edges[0]
    fig.suptitle("Kept (non-zero) encoder Linear weights\n"
                 f"the same bins in every panel (width {width:.3g})", fontsize=10)
    return fig


def _layers(counts: Sequence[data.LayerCount]):
    runs: dict[str, data.FigureRun] = {}
    for c in counts:
        runs.setdefault(c.run.run_dir, c.run)
    per_cell: dict[tuple[str, float, str], int] = {}
    for run in runs.values():
        key = (run.title, run.level_pct, run.method)
        per_cell[key] = per_cell.get(key, 0) + 1
    kinds = [k for k in (data.ALL_MATRICES, *data.MATRIX_TYPES, data.OTHER) if any(c.matrix == k for c in counts)]
    fig, axes = _grid(len(kinds) + 1, 3.4, 2.8)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for ax, kind in zip(axes, kinds):
        for color, run in zip(colors, runs.values()):
            points = sorted((c.layer, c.remaining_pct) for c in counts
                            if c.run is run and c.matrix == kind and c.layer is not None)
            if points:
                ax.plot([x for x, _ in points], [y for _, y in points], marker="o", markersize=3, color=color,
                        label=data.run_label(run, per_cell[(run.title, run.level_pct, run.method)] > 1))
        ax.set_title("every matrix of the layer" if kind == data.ALL_MATRICES else kind, fontsize=9)
        ax.set_xlabel("layer", fontsize=8)
        ax.set_ylabel("remaining weights (%)", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    legend = axes[len(kinds)]
    legend.axis("off")
    legend.legend(*axes[0].get_legend_handles_labels(), loc="upper left", fontsize=7, frameon=False)
    for ax in axes[len(kinds) + 1:]:
        ax.set_visible(False)
    fig.suptitle("Remaining weights per layer and matrix kind (non-zero entries / all entries)", fontsize=10)
    return fig


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return save_figure(fig, path)
