"""The data of the paper's analysis figures, read from the saved weights of run folders.

* Figure 3 (:func:`weight_histograms`): the values of the weights each run kept (the non-zero
  entries of its encoder Linear matrices), counted in bins every run shares, so that panels compare.
* Figure 4 (:func:`layer_remaining`): kept and total weights per layer and matrix kind.

Weights come from ``model/*.safetensors`` one matrix at a time (no model is built). The matrices
are the run's pruned ones as ``result.json`` names them (``remaining_by_module``, written from
:func:`movprune.pruners.counting.prunable_linears`); older results without it fall back to every
``.weight`` that :func:`movprune.experiments.inspect.matrix_type` recognises inside a numbered layer.

Pure logic: returns data; the CLI prints.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError

from movprune import results
from movprune.errors import RunFailedError
from movprune.experiments.compare.render import column_label
from movprune.experiments.compare.table import Comparison, level_label
from movprune.experiments.inspect import MATRIX_TYPES, OTHER, layer_index, matrix_type
from movprune.models import corrupt_model_message

#: Uniform bins over the central part of the kept weights (one more bin each side holds the tails).
CENTRAL_BINS = 100
#: The uniform bins span +-the largest, over runs, of this quantile of |kept weight|: a few large
#: outliers (MiniLM-L6 after 300 dense steps on SST-2: 99.9% of |W| below 0.28, the largest 7.9)
#: would otherwise squeeze every other weight into a handful of bins.
CENTRAL_QUANTILE = 0.999
#: The matrix kind of a layer's row that sums every matrix kind of that layer.
ALL_MATRICES = "all"

HISTOGRAM_FIELDS = ("run", "method", "remaining_pct", "bin_left", "bin_right", "count")
LAYER_FIELDS = ("run", "method", "layer", "matrix", "kept", "total", "remaining_pct")


@dataclass
class FigureRun:
    """One run of a figure: its folder, the comparison column it belongs to (its method variant) and
    its row (the target remaining-weights level)."""

    run_dir: str
    method: str
    level_pct: float | None
    seed: int
    remaining_pct: float
    title: str
    modules: list[str]


def figure_runs(comparisons: Sequence[Comparison]) -> list[FigureRun]:
    """Every run of ``comparisons`` in table order (comparison, level from dense down, column),
    labelled by its column as ``movprune compare`` groups it."""
    found = []
    for comp in comparisons:
        for row in comp.rows:
            for column in comp.columns:
                cell = row.cells.get(column)
                for r in (cell.runs if cell else []):
                    # rows of another axis than the level (compare --rows KEY): the run's own target
                    level = row.remaining_pct if row.remaining_pct is not None else r.get("target_remaining_pct")
                    found.append(FigureRun(str(r["run_dir"]), column_label(column), level, int(r["seed"]),
                                           float(r["remaining_pct"]), comp.title,
                                           list(r.get("remaining_by_module") or [])))
    return found


def _safetensors(run_dir: str) -> list[Path]:
    files = sorted((Path(run_dir) / results.MODEL_DIR).glob("*.safetensors"))
    if not files:
        raise RunFailedError(f"{run_dir}: no {results.MODEL_DIR}/*.safetensors to read the weights from "
                             "(the figures need each run's saved model)")
    return files


def encoder_matrices(run: FigureRun) -> Iterator[tuple[str, np.ndarray]]:
    """(module name, weight as float64) of each pruned encoder matrix of ``run``, one at a time
    (the model may be sharded over several files)."""
    from safetensors import safe_open

    files = _safetensors(run.run_dir)
    saved: dict[str, Path] = {}
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as f:
                saved.update({key[: -len(".weight")]: path for key in f.keys() if key.endswith(".weight")})
        except (OSError, SafetensorError) as e:
            raise RunFailedError(corrupt_model_message(path, e)) from None
    wanted = _pruned(run, saved)
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as f:
                for module in (m for m in wanted if saved[m] == path):
                    yield module, f.get_tensor(module + ".weight").double().numpy()
        except (OSError, SafetensorError) as e:
            raise RunFailedError(corrupt_model_message(path, e)) from None


def _pruned(run: FigureRun, saved: dict[str, Path]) -> list[str]:
    """The saved modules that are ``run``'s pruned matrices. Result names may carry a prefix the
    saved names lack, or the reverse (as :func:`movprune.experiments.inspect.matrix_sizes` allows)."""
    if not run.modules:
        return [m for m in saved if matrix_type(m) != OTHER and layer_index(m) is not None]
    found = []
    for module in run.modules:
        if module in saved:
            found.append(module)
            continue
        match = [k for k in saved if k.endswith("." + module) or module.endswith("." + k)]
        if len(match) != 1:
            raise RunFailedError(f"{run.run_dir}/{results.MODEL_DIR}: no single saved weight for the pruned "
                                 f"matrix {module} ({len(match)} candidates); is the model the run's own?")
        found.append(match[0])
    return found


def _kept(weight: np.ndarray) -> np.ndarray:
    return weight[weight != 0]


def shared_edges(runs: Sequence[FigureRun]) -> np.ndarray:
    """Bin edges for every run: :data:`CENTRAL_BINS` uniform bins over +-R (R the largest, over
    runs, :data:`CENTRAL_QUANTILE` of |kept weight|), and one tail bin each side out to +-max|kept|
    when weights lie beyond R."""
    largest, central = 0.0, 0.0
    for run in runs:
        magnitudes = [np.abs(_kept(w)) for _, w in encoder_matrices(run)]
        flat = np.concatenate(magnitudes) if magnitudes else np.zeros(0)
        if flat.size:
            largest = max(largest, float(flat.max()))
            central = max(central, float(np.quantile(flat, CENTRAL_QUANTILE)))
    if largest == 0.0:
        raise RunFailedError("no run keeps any weight: nothing to draw")
    if central <= 0.0 or central >= largest:
        return np.linspace(-largest, largest, CENTRAL_BINS + 1)
    return np.concatenate([[-largest], np.linspace(-central, central, CENTRAL_BINS + 1), [largest]])


def run_histogram(run: FigureRun, edges: np.ndarray) -> np.ndarray:
    """Counts of ``run``'s kept weights in ``edges`` (numpy's bins: the last one closed)."""
    counts = np.zeros(len(edges) - 1, dtype=np.int64)
    for _, weight in encoder_matrices(run):
        counts += np.histogram(_kept(weight), bins=edges)[0]
    return counts


@dataclass
class Histograms:
    """Figure 3's data: the shared edges and each run's counts."""

    edges: np.ndarray
    runs: list[FigureRun]
    counts: list[np.ndarray]

    def records(self) -> list[dict[str, Any]]:
        """One row per run and bin (:data:`HISTOGRAM_FIELDS`)."""
        return [{"run": run.run_dir, "method": run.method, "remaining_pct": run.remaining_pct,
                 "bin_left": float(self.edges[i]), "bin_right": float(self.edges[i + 1]), "count": int(n)}
                for run, counts in zip(self.runs, self.counts) for i, n in enumerate(counts)]


def weight_histograms(comparisons: Sequence[Comparison]) -> Histograms:
    """Histograms of every run's kept weights over :func:`shared_edges`."""
    runs = figure_runs(comparisons)
    edges = shared_edges(runs)
    return Histograms(edges, runs, [run_histogram(run, edges) for run in runs])


@dataclass
class LayerCount:
    """Kept and total weights of one run's matrices of one kind in one layer (``matrix`` may be
    :data:`ALL_MATRICES`; ``layer`` is None outside numbered layers)."""

    run: FigureRun
    layer: int | None
    matrix: str
    kept: int
    total: int

    @property
    def remaining_pct(self) -> float:
        """Kept / total, in %."""
        return 100.0 * self.kept / self.total


def run_layer_counts(run: FigureRun) -> list[LayerCount]:
    """``run``'s kept / total weights per (layer, matrix kind), then per layer over every kind."""
    counts: dict[tuple[int | None, str], list[int]] = {}
    for module, weight in encoder_matrices(run):
        for key in ((layer_index(module), matrix_type(module)), (layer_index(module), ALL_MATRICES)):
            entry = counts.setdefault(key, [0, 0])
            entry[0] += int(np.count_nonzero(weight))
            entry[1] += int(weight.size)
    order = {kind: i for i, kind in enumerate((*MATRIX_TYPES, OTHER, ALL_MATRICES))}
    keys = sorted(counts, key=lambda k: (k[0] is None, k[0] or 0, order[k[1]]))
    return [LayerCount(run, layer, kind, *counts[(layer, kind)]) for layer, kind in keys]


def layer_remaining(comparisons: Sequence[Comparison]) -> list[LayerCount]:
    """Figure 4's data: :func:`run_layer_counts` of every run."""
    return [count for run in figure_runs(comparisons) for count in run_layer_counts(run)]


def layer_records(counts: Sequence[LayerCount]) -> list[dict[str, Any]]:
    """One row per run, layer and matrix kind (:data:`LAYER_FIELDS`); ``layer`` is empty outside
    numbered layers."""
    return [{"run": c.run.run_dir, "method": c.run.method, "layer": "" if c.layer is None else c.layer,
             "matrix": c.matrix, "kept": c.kept, "total": c.total, "remaining_pct": c.remaining_pct}
            for c in counts]


def run_label(run: FigureRun, several_seeds: bool) -> str:
    """``"movement · 10% remaining (90% sparse)"``, with the seed when the cell has several."""
    label = f"{run.method} · {level_label(run.level_pct)}"
    return f"{label} · seed {run.seed}" if several_seeds else label

