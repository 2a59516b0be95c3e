"""Accuracy against measured speed-up (Lagunas et al. 2021, Figure 1 style), from the JSON of
``benchmarks/sweep_speed.py``: a panel per batch size, a line per method x pattern (and runtime:
PyTorch solid, ONNX Runtime dashed) through its runs (mean over seeds per remaining-weights
level), the dense model as the reference point at 1x.

Pure logic: returns the written path; the CLI prints.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from movprune.errors import RunFailedError
from movprune.experiments.compare.figure import save_figure


def load_speed(path: str | Path) -> dict[str, Any]:
    """The benchmark JSON at ``path`` (:class:`RunFailedError` when unreadable or not one)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise RunFailedError(f"{path}: unreadable speed file ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), dict):
        raise RunFailedError(f"{path}: not the output of benchmarks/sweep_speed.py (no 'runs')")
    return data


RUNTIMES = ("pytorch", "onnx")


def speed_points(speed: dict[str, Any], run_dirs: Iterable[str] | None = None
                 ) -> dict[int, dict[tuple[str, str], list[tuple[float, float, float]]]]:
    """batch size -> (pruner label, runtime) -> [(speed-up, metric, remaining %)], one point per
    level (means over seeds), sorted by speed-up; speed-ups are against the dense model in the same
    runtime, for each run's fastest format there. Only runs in ``run_dirs`` when given."""
    wanted = None if run_dirs is None else {str(Path(d).resolve()) for d in run_dirs}
    out: dict[int, dict[str, list[tuple[float, float, float]]]] = {}
    for size in (1, 32):
        cells: dict[tuple[str, str, float], list[tuple[float, float]]] = {}
        for entry in speed["runs"].values():
            if wanted is not None and str(Path(entry["run_dir"]).resolve()) not in wanted:
                continue
            level = 100.0 if entry["method"] == "none" else round(float(entry["remaining_pct"]), 1)
            for rt in RUNTIMES:
                best = ((entry.get("best") or {}).get(rt) or {}).get(f"batch_{size}")
                if best is not None:
                    cells.setdefault((entry["pruner"], rt, level), []).append(
                        (best["speedup_vs_dense"], entry["metric_value"]))
        lines: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        for (label, rt, level), values in cells.items():
            lines.setdefault((label, rt), []).append((statistics.mean(v[0] for v in values),
                                                      statistics.mean(v[1] for v in values), level))
        out[size] = {key: sorted(points) for key, points in sorted(lines.items())}
    return out


def plot_speed(speed: dict[str, Any], path: str | Path, run_dirs: Iterable[str] | None = None) -> Path:
    """Draw the accuracy / speed-up frontier into ``path`` (PNG, SVG or PDF by suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = speed_points(speed, run_dirs)
    metric = next((e["metric"] for e in speed["runs"].values()), "metric")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, size in zip(axes, (1, 32)):
        colors: dict[str, Any] = {}
        for (label, rt), line in points[size].items():
            if label == "none":
                continue
            xs, ys, levels = zip(*line)
            color = colors.setdefault(label, f"C{len(colors)}")
            ax.plot(xs, ys, marker="o" if rt == "pytorch" else "s", linestyle="-" if rt == "pytorch" else "--",
                    color=color, label=f"{label} ({'PyTorch' if rt == 'pytorch' else 'ONNX Runtime'})")
            for x, y, level in line:
                ax.annotate(f"{level:g}%", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        dense = points[size].get(("none", "pytorch"))
        if dense:
            y = statistics.mean(p[1] for p in dense)
            ax.axhline(y, color="grey", linestyle=":", linewidth=1)
            ax.plot([1.0], [y], marker="*", markersize=12, color="black", linestyle="none", label="dense")
        ax.axvline(1.0, color="grey", linewidth=0.5)
        ax.set_xlabel(f"speed-up vs the dense model in the same runtime, batch {size}")
        ax.set_title(f"batch {size} × {speed.get('inputs', {}).get('seq_length', '?')} tokens, "
                     f"{speed.get('timing', {}).get('threads', '?')} thread(s)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(metric)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
