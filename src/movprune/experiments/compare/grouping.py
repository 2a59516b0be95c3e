"""Grouping runs into comparisons: a table per (task, model, distillation teacher), a row per
remaining-weights level (or another axis's value), a column per method (and another axis's value;
split further when settings differ), best per row."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from movprune import identity, pruners, results
from movprune.errors import MovpruneError
from movprune.experiments.compare.paper import paper_at, paper_numbers
from movprune.experiments.compare.render import axes_text, column_label
from movprune.experiments.compare.settings import setting_differences
from movprune.experiments.compare.table import (
    LEVEL,
    METHOD,
    Cell,
    Column,
    Comparison,
    Row,
    Stat,
    level_label,
    value_text,
)
from movprune.experiments.compare.variants import BUDGET_KEYS, hashable, run_settings, split_by_settings


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
    """The row a run belongs to: its target remaining %, else the measured one (rounded to 0.1), for
    methods whose sparsity follows from a penalty or from another budget (a latency); the recipe's
    ``remaining_pct`` only for a result that records no target at all."""
    value = result["target_remaining_pct"] if "target_remaining_pct" in result else \
        (result.get("pruner_config") or {}).get("remaining_pct")
    if value is not None:
        return round(float(value), 4)
    return round(float(result["remaining_pct"]), 1)


def _teacher(result: dict[str, Any]) -> str | None:
    distill = result.get("distill")
    return distill.get("teacher") if isinstance(distill, dict) else None


def _sort_value(value: Any) -> tuple:
    """Numbers in numeric order, then everything else by its text (None first)."""
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0.0, json.dumps(value, default=str))


def _column_order(columns: Iterable[Column]) -> list[Column]:
    """Registry order of the methods (none first, then the methods as registered), unknown names
    last; a method's columns by their axes' values (300 before 1000)."""
    order = {m: i for i, m in enumerate(pruners.method_names())}
    return sorted(set(columns), key=lambda c: (order.get(pruners.base_method(c.method), len(order)), c.method,
                                               [(k, _sort_value(v)) for k, v in c.axes]))


def check_axes(rows: str = LEVEL, columns: str = METHOD, row_option: str = "--rows") -> tuple[str, str]:
    """The row and column axes as :func:`build_comparisons` takes them (``pruner.remaining_pct`` is
    :data:`LEVEL`, ``pruner.method`` :data:`METHOD`); raises :class:`MovpruneError` for a key that
    is not a setting or for the same axis twice (``row_option`` names the rows' option in it)."""
    aliases = {"pruner.remaining_pct": LEVEL, "pruner.method": METHOD}
    rows, columns = aliases.get(rows, rows), aliases.get(columns, columns)
    problems = []
    for option, key in ((row_option, rows), ("--columns", columns)):
        if key in (LEVEL, METHOD):
            continue
        kind = identity.kind_of(key)
        if kind is not None and key not in identity.key_kinds():  # a whole section, e.g. train
            problems.append(f"{option} {key}: a section of the recipe, not one key; give one of its keys "
                            f"(e.g. {next(k for k in identity.key_kinds() if k.startswith(key + '.'))})")
            continue
        if kind is None or kind in ("output", "operational") or key == "seed":
            why = identity.sweepable_problem(key) if key != "seed" else "a cell averages over the seeds"
            problems.append(f"{option} {key}: {why}; give '{LEVEL}', '{METHOD}' or a recipe key that changes "
                            "the numbers (e.g. train.max_steps)")
    if rows == METHOD:
        problems.append(f"{row_option} method: the method is always part of a column; give another axis")
    if rows == columns and not problems:
        problems.append(f"{row_option} and --columns are both {rows}: give two different axes")
    if problems:
        raise MovpruneError("; ".join(dict.fromkeys(problems)))
    return rows, columns


def build_comparisons(found: Sequence[dict[str, Any]], paper: bool = False, rows: str = LEVEL,
                      columns: str = METHOD) -> list[Comparison]:
    """Group results by (task, model, distillation teacher) into tables: a row per value of the
    ``rows`` axis (default: remaining-weights level), a column per method and (when ``columns`` is a
    key) that key's value, split further when settings differ; best per row. With ``paper`` (level
    rows), attach the paper's numbers where task and level match. Runs with a remedy on get their own
    column (``pruners.variant_label``)."""
    rows, columns = check_axes(rows, columns)
    groups: dict[tuple[str, str, str | None], list[dict[str, Any]]] = {}
    for r in found:
        teacher = _teacher(r)
        groups.setdefault((r["task"], r["model"], teacher and _shown_path(teacher)), []).append(r)
    reference = paper_numbers() if paper and rows == LEVEL else []
    comparisons = []
    for (task, model, teacher), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")):
        metric_names: list[str] = []
        for r in runs:
            for m in r.get("metric_names") or list(r["metrics"]):
                if m not in metric_names:
                    metric_names.append(m)
        by_cell, warnings = _cells_by_settings(task, runs, rows, columns)
        table_rows: dict[Any, Row] = {}
        for (value, column), cell_runs in by_cell.items():
            seeds = [r["seed"] for r in cell_runs]
            repeated = sorted({s for s in seeds if seeds.count(s) > 1})
            if repeated:
                warnings.append(
                    f"{task}/{column_label(column)} at {_row_text(rows, value)}: several runs with seed(s) "
                    f"{', '.join(map(str, repeated))} ({', '.join(r['run_dir'] for r in cell_runs)}); "
                    "all are averaged")
            metrics = {m: Stat.of([r["metrics"][m] for r in cell_runs]) for m in metric_names
                       if all(m in r["metrics"] for r in cell_runs)}
            levels = {run_level(r) for r in cell_runs}
            cell = Cell(column, sorted(cell_runs, key=lambda r: r["seed"]), metrics,
                        Stat.of([r["remaining_pct"] for r in cell_runs]), levels.pop() if len(levels) == 1 else None)
            table_rows.setdefault(value, Row(value, {}, axis=rows)).cells[column] = cell
        if rows == LEVEL:
            ordered = sorted(table_rows.values(), key=lambda row: -row.value)
        else:
            ordered = sorted(table_rows.values(), key=lambda row: _sort_value(row.value))
        comparison = Comparison(task, model, teacher, metric_names, _column_order(c for _, c in by_cell),
                                ordered, warnings, row_axis=rows, column_axis=columns)
        comparison.warnings.extend(
            f"{comparison.title}: runs differ in settings, so their numbers may not be comparable: {line}"
            for line in setting_differences(runs, laid_out=_laid_out(rows, columns)))
        for row in ordered:
            _mark_best(row, comparison.headline)
            if reference:
                row.paper = paper_at(reference, task, teacher is not None, row.value, metric_names)
        comparisons.append(comparison)
    return comparisons


def _laid_out(rows: str, columns: str) -> set[str]:
    """The keys a table's axes show (a budget key shows the effective ``steps`` too)."""
    keys = {rows, columns}
    return keys | ({"steps"} if keys & set(BUDGET_KEYS) else set())


def _row_text(axis: str, value: Any) -> str:
    return level_label(value) if axis == LEVEL else f"{axis}={value_text(value)}"


def _coordinate(run: dict[str, Any], axis: str) -> Any:
    if axis == LEVEL:
        return run_level(run)
    settings = run_settings(run)
    return None if settings is None else hashable(settings.get(axis))


def _cells_by_settings(task: str, runs: Sequence[dict[str, Any]], rows: str, columns: str
                       ) -> tuple[dict[tuple[Any, Column], list[dict[str, Any]]], list[str]]:
    """Runs by (row value, column). A column is a method and, when the columns are a key, its value;
    runs of one row and column whose settings differ in more than the seed go to separate columns
    holding the differing values too (a cell averages over seeds only), with a warning naming the keys."""
    by_coordinates: dict[tuple[Any, Column], list[dict[str, Any]]] = {}
    for r in runs:
        method = pruners.variant_label(results.pruner_label(r), r.get("pruner_config"))
        axes = () if columns == METHOD else ((columns, _coordinate(r, columns)),)
        by_coordinates.setdefault((_coordinate(r, rows), Column(method, axes)), []).append(r)
    ignore = {"seed"} | _laid_out(rows, columns) | ({"pruner.remaining_pct"} if LEVEL in (rows, columns) else set())
    by_cell: dict[tuple[Any, Column], list[dict[str, Any]]] = {}
    warnings = []
    for (value, column), cell_runs in by_coordinates.items():
        differing, groups = split_by_settings(cell_runs, ignore=ignore)
        if differing or len(groups) > 1:
            shown = "; ".join("settings unknown (no readable recipe.yaml)" if axes is None else axes_text(axes)
                              for axes, _ in groups)
            warnings.append(
                f"{task}/{column_label(column)} at {_row_text(rows, value)}: the runs differ in "
                f"{', '.join(differing) or 'unknown settings'}, so they are shown as separate columns, "
                f"not averaged ({shown})")
        for axes, members in groups:
            extra = (("settings", "unknown"),) if axes is None else axes
            by_cell[(value, column._replace(axes=column.axes + extra))] = members
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
