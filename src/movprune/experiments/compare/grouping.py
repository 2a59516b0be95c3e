"""Grouping runs into comparisons: a table per (task, model, distillation teacher), a row per
remaining-weights level, a column per pruner (split further when settings differ), best per row."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from movprune import pruners, results
from movprune.experiments.compare.paper import paper_at, paper_numbers
from movprune.experiments.compare.settings import setting_differences
from movprune.experiments.compare.table import Cell, Comparison, Row, Stat, level_label
from movprune.experiments.compare.variants import split_by_settings


def _shown_path(text: str) -> str:
    """A teacher's path as tables group and show it: normalised, and relative to the current folder
    when it lies below it, so that one teacher written two ways is one table and tables written
    into docs do not carry one machine's absolute paths."""
    path = Path(os.path.normpath(text))
    if path.is_absolute():
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            pass
    return str(path)


def run_level(result: dict[str, Any]) -> float:
    """The row a run belongs to: its target remaining %, else the recipe's, else the measured one
    (rounded to 0.1, for methods whose sparsity follows from a penalty)."""
    for value in (result.get("target_remaining_pct"),
                  (result.get("pruner_config") or {}).get("remaining_pct")):
        if value is not None:
            return round(float(value), 4)
    return round(float(result["remaining_pct"]), 1)


def _teacher(result: dict[str, Any]) -> str | None:
    distill = result.get("distill")
    return distill.get("teacher") if isinstance(distill, dict) else None


def _pruner_order(names: Iterable[str]) -> list[str]:
    """Registry order (none first, then the methods as registered), unknown names last."""
    order = {m: i for i, m in enumerate(pruners.method_names())}
    # A column split by settings ("movement [train.lr=0.001]") sorts with its method.
    return sorted(set(names), key=lambda m: (order.get(pruners.base_method(m.split(" [", 1)[0]), len(order)), m))


def build_comparisons(found: Sequence[dict[str, Any]], paper: bool = False) -> list[Comparison]:
    """Group results by (task, model, distillation teacher) into tables; with ``paper``, attach the
    paper's numbers where task and remaining-weights level match. Runs with a remedy on get their
    own column (``pruners.variant_label``)."""
    groups: dict[tuple[str, str, str | None], list[dict[str, Any]]] = {}
    for r in found:
        teacher = _teacher(r)
        groups.setdefault((r["task"], r["model"], teacher and _shown_path(teacher)), []).append(r)
    reference = paper_numbers() if paper else []
    comparisons = []
    for (task, model, teacher), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")):
        metric_names: list[str] = []
        for r in runs:
            for m in r.get("metric_names") or list(r["metrics"]):
                if m not in metric_names:
                    metric_names.append(m)
        by_cell, warnings = _cells_by_settings(task, runs)
        rows: dict[float, Row] = {}
        for (level, pruner), cell_runs in by_cell.items():
            seeds = [r["seed"] for r in cell_runs]
            repeated = sorted({s for s in seeds if seeds.count(s) > 1})
            if repeated:
                warnings.append(
                    f"{task}/{pruner} at {level_label(level)}: several runs with seed(s) "
                    f"{', '.join(map(str, repeated))} ({', '.join(r['run_dir'] for r in cell_runs)}); "
                    "all are averaged")
            metrics = {m: Stat.of([r["metrics"][m] for r in cell_runs]) for m in metric_names
                       if all(m in r["metrics"] for r in cell_runs)}
            cell = Cell(pruner, sorted(cell_runs, key=lambda r: r["seed"]), metrics,
                        Stat.of([r["remaining_pct"] for r in cell_runs]))
            rows.setdefault(level, Row(level, {})).cells[pruner] = cell
        ordered = sorted(rows.values(), key=lambda row: -row.remaining_pct)
        comparison = Comparison(task, model, teacher, metric_names,
                                _pruner_order(p for _, p in by_cell), ordered, warnings)
        comparison.warnings.extend(
            f"{comparison.title}: runs differ in settings, so their numbers may not be comparable: {line}"
            for line in setting_differences(runs))
        for row in ordered:
            _mark_best(row, comparison.headline)
            if reference:
                row.paper = paper_at(reference, task, teacher is not None, row.remaining_pct, metric_names)
        comparisons.append(comparison)
    return comparisons


def _cells_by_settings(task: str, runs: Sequence[dict[str, Any]]
                       ) -> tuple[dict[tuple[float, str], list[dict[str, Any]]], list[str]]:
    """Runs by (level, column). A column is a pruner; runs of one pruner and level whose settings
    differ in more than the seed go to separate columns named by the differing values (a cell
    averages over seeds only), with a warning naming the keys."""
    by_level_pruner: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for r in runs:
        label = pruners.variant_label(results.pruner_label(r), r.get("pruner_config"))
        by_level_pruner.setdefault((run_level(r), label), []).append(r)
    by_cell: dict[tuple[float, str], list[dict[str, Any]]] = {}
    warnings = []
    for (level, pruner), cell_runs in by_level_pruner.items():
        differing, groups = split_by_settings(cell_runs)
        if differing or len(groups) > 1:
            warnings.append(
                f"{task}/{pruner} at {level_label(level)}: the runs differ in "
                f"{', '.join(differing) or 'unknown settings'}, so they are shown as separate columns, "
                f"not averaged ({'; '.join(label for label, _ in groups)})")
        for label, members in groups:
            by_cell[(level, f"{pruner} [{label}]" if label else pruner)] = members
    return by_cell, warnings


def _mark_best(row: Row, metric: str) -> None:
    """Mark the best headline mean of a row (ties all marked); a row with one cell, or where every
    cell ties, has no best."""
    scored = [c for c in row.cells.values() if metric in c.metrics]
    top = max((c.metrics[metric].mean for c in scored), default=0.0)
    winners = [c for c in scored if math.isclose(c.metrics[metric].mean, top, rel_tol=0, abs_tol=1e-9)]
    if len(winners) < len(scored):
        for c in winners:
            c.best = True
