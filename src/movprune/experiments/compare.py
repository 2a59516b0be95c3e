"""Comparing finished runs: the paper's Table 2 (rows = remaining weights, columns = pruners) and
Figure 2 (headline metric against remaining weights), from run folders.

Pure logic: functions here return data and text; the CLI prints them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from movprune import pruners, results
from movprune.errors import RunFailedError
from movprune.experiments.variants import saved_recipe, split_by_settings

#: Shown beside the paper's numbers: they come from BERT-base on the paper's tasks, not our runs.
PAPER_LABEL = "paper, BERT-base"
_DENSE_PCT = 100.0
#: Marks a cell averaging a run whose result.json has warnings (a footnote says which).
WARNING_MARK = "⚠"


def level_label(remaining_pct: float | None, short: bool = False) -> str:
    """``3`` -> ``"3% remaining (97% sparse)"`` (``short``: ``"3% (97% sparse)"``);
    ``100`` -> ``"100% (dense)"``."""
    if remaining_pct is None:
        return "set by the method"
    if remaining_pct >= _DENSE_PCT:
        return "100% (dense)"
    sparse = round(100 - remaining_pct, 4)
    return f"{remaining_pct:g}%{'' if short else ' remaining'} ({sparse:g}% sparse)"


# --------------------------------------------------------------------------------------------
# Finding runs


@dataclass
class Scan:
    """Finished results found under some folders, and why other run folders were skipped."""

    results: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _looks_like_run(path: Path) -> bool:
    return any((path / name).exists() for name in
               (results.RESULT_FILE, results.RECIPE_FILE, results.METRICS_FILE))


def scan_runs(dirs: Iterable[str | Path]) -> Scan:
    """Every finished run at or below ``dirs`` (each run once); unfinished or corrupt run folders
    become warnings. A folder that does not exist is a warning too."""
    scan = Scan()
    seen: set[Path] = set()
    for top in dirs:
        top = Path(top)
        if not top.is_dir():
            scan.warnings.append(f"{top}: not a folder, skipped")
            continue
        for root, subdirs, _ in os.walk(top):
            here = Path(root)
            if _looks_like_run(here):
                subdirs[:] = []  # a run's own folders (model/) hold no runs
                real = here.resolve()
                if real in seen:
                    continue
                seen.add(real)
                try:
                    # Typed and validated here (NaN, wrong types: skipped with a warning); the
                    # table code below reads the mapping.
                    scan.results.append(results.RunResult.load(here).as_dict())
                except RunFailedError as e:
                    scan.warnings.append(f"skipped {e}")
            else:
                # Hidden folders are movprune's staging folders (a run not yet published) or others'.
                subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
    return scan


# --------------------------------------------------------------------------------------------
# Tables


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


#: Settings every run of one table should share: the paper gives every method the same data and
#: budget, and numbers trained or evaluated otherwise do not compare. ``steps`` and
#: ``num_processes`` come from ``result.json`` (the effective budget); the others are recipe keys
#: (``recipe.yaml``). ``pruner.*`` keys are left out for dense runs, which have no schedule.
COMPARABLE_SETTINGS = ("steps", "num_processes", "dataset", "data_dir", "train_split", "eval_split",
                       "train.batch_size", "train.lr", "train.lr_warmup_fraction", "train.weight_decay",
                       "train.max_grad_norm", "train.max_seq_length", "train.doc_stride", "train.bf16",
                       "train.freeze_embeddings", "train.max_train_samples", "train.max_eval_samples",
                       "pruner.initial_warmup", "pruner.final_warmup", "pruner.scope",
                       "distill.alpha_ce", "distill.alpha_distil", "distill.temperature")
_FROM_RESULT = ("steps", "num_processes")


def run_settings(result: dict[str, Any]) -> dict[str, Any] | None:
    """The :data:`COMPARABLE_SETTINGS` of a run, or None when its ``recipe.yaml`` is unreadable.
    ``train.max_seq_length: null`` is replaced by the task's default, so that leaving it to the
    task and writing the same number out are not told apart."""
    recipe = saved_recipe(result)
    if recipe is None:
        return None
    settings: dict[str, Any] = {key: result.get(key) for key in _FROM_RESULT}
    for key in COMPARABLE_SETTINGS:
        if key in _FROM_RESULT or (key.startswith("pruner.") and result.get("pruner") == "none"):
            continue
        node: Any = recipe
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        settings[key] = node
    if settings.get("train.max_seq_length") is None:
        from movprune import tasks

        settings["train.max_seq_length"] = tasks.default_max_seq_length(str(result.get("task")))
    return settings


def setting_differences(runs: Sequence[dict[str, Any]]) -> list[str]:
    """One line per setting whose value differs between ``runs``: each value with how many runs
    have it and, for the rarer values, which runs; plus a line when some runs (not all) have no
    readable ``recipe.yaml`` and so could not be checked."""
    known = [(r, s) for r in runs if (s := run_settings(r)) is not None]
    lines = []
    for key in COMPARABLE_SETTINGS:
        by_value: dict[str, list[str]] = {}
        for r, s in known:
            if key in s:
                by_value.setdefault(json.dumps(s[key]), []).append(r["run_dir"])
        if len(by_value) < 2:
            continue
        ranked = sorted(by_value.items(), key=lambda kv: -len(kv[1]))
        parts = [f"{value}: {len(dirs)} run{'s' if len(dirs) > 1 else ''}" for value, dirs in ranked[:1]]
        for value, dirs in ranked[1:]:
            shown = ", ".join(dirs[:3]) + (f", ... ({len(dirs) - 3} more)" if len(dirs) > 3 else "")
            parts.append(f"{value}: {shown}")
        lines.append(f"{key} differs ({'; '.join(parts)})")
    checked = {id(r) for r, _ in known}
    unchecked = [r["run_dir"] for r in runs if id(r) not in checked]
    if known and unchecked:
        shown = ", ".join(unchecked[:3]) + (f", ... ({len(unchecked) - 3} more)" if len(unchecked) > 3 else "")
        lines.append(f"{len(unchecked)} of {len(runs)} runs have no readable recipe.yaml, so their settings "
                     f"were not checked ({shown})")
    return lines


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
                row.paper = _paper_at(reference, task, teacher is not None, row.remaining_pct, metric_names)
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


# --------------------------------------------------------------------------------------------
# The paper's numbers


def paper_numbers() -> list[dict[str, Any]]:
    """The paper's Tables 2 and 3 (shipped as ``movprune/data/sanh2020_tables.csv``), one dict per
    line: table, distillation (bool), task, remaining (float), method, metric1, metric2."""
    text = resources.files("movprune.data").joinpath("sanh2020_tables.csv").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    rows = []
    for rec in csv.DictReader(lines):
        rows.append({"table": int(rec["table"]), "distillation": rec["distillation"] == "yes",
                     "task": rec["task"], "remaining": float(rec["remaining"]),
                     # the paper's "BERT base fine-tuning" is our dense method
                     "method": "none" if rec["method"] == "dense" else rec["method"],
                     "metric1": float(rec["metric1"]),
                     "metric2": float(rec["metric2"]) if rec["metric2"] else None})
    return rows


def _paper_at(reference: list[dict[str, Any]], task: str, distilled: bool, level: float,
              metric_names: list[str]) -> dict[str, dict[str, float]]:
    """The paper's numbers for ``task`` at ``level``; metric1/metric2 are the task's first two
    metrics (SQuAD EM/F1, MNLI matched/mismatched accuracy, QQP accuracy/F1)."""
    out: dict[str, dict[str, float]] = {}
    for rec in reference:
        # The dense baseline is only in Table 2; it is the same model with or without distillation.
        same_setting = rec["distillation"] == distilled or rec["method"] == "none"
        if rec["task"] != task or not same_setting or not math.isclose(rec["remaining"], level):
            continue
        values = [rec["metric1"], rec["metric2"]]
        out[rec["method"]] = {m: v for m, v in zip(metric_names, values) if v is not None}
    return out


def paper_tasks() -> list[str]:
    """Tasks the paper reports."""
    return sorted({r["task"] for r in paper_numbers()})


# --------------------------------------------------------------------------------------------
# Text renderings


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


def columns(comparison: Comparison, paper: bool) -> list[tuple[str, str, str]]:
    """(kind, pruner, header) of every value column: ours, each followed by the paper's when shown."""
    cols = []
    with_paper = set(comparison.paper_pruners()) if paper else set()
    for p in comparison.pruners:
        name = pruner_header(comparison, p)
        cols.append(("ours", p, name))
        if p in with_paper:
            cols.append(("paper", p, f"{name} ({PAPER_LABEL})"))
    return cols


def pruner_header(comparison: Comparison, pruner: str) -> str:
    """The pruner's column header (``"dense (none)"`` for the method that keeps every weight)."""
    return "dense (none)" if pruner == _dense_name(comparison) else pruner


def _dense_name(comparison: Comparison) -> str | None:
    """The pruner whose runs keep every weight (it only appears in the 100% row)."""
    for p in comparison.pruners:
        levels = {row.remaining_pct for row in comparison.rows if p in row.cells}
        if levels == {_DENSE_PCT}:
            return p
    return None


def metrics_caption(comparison: Comparison) -> str:
    """What a cell holds: ``"cells: accuracy, mean ± std over seeds (n = 3)"``."""
    ns = sorted({c.metrics[m].n for row in comparison.rows for c in row.cells.values()
                 for m in c.metrics})
    if ns == [1]:
        over = "one seed each (no std)"
    else:
        over = "mean ± std over seeds (" + (f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}–{ns[-1]} per cell") + ")"
    return f"cells: {' / '.join(comparison.metric_names)} (%), {over}; best {comparison.headline} per row in bold"


def to_markdown(comparisons: Sequence[Comparison], paper: bool = False) -> str:
    """One Markdown table per comparison, best per row in bold."""
    blocks = []
    for comp in comparisons:
        cols = columns(comp, paper)
        lines = [f"**{comp.title}** — {metrics_caption(comp)}", "",
                 "| remaining weights | " + " | ".join(h for _, _, h in cols) + " |",
                 "|---|" + "---:|" * len(cols)]
        for row in comp.rows:
            cells = []
            for kind, p, _ in cols:
                if kind == "paper":
                    cells.append(paper_text(row.paper.get(p), comp.metric_names))
                else:
                    cell = row.cells.get(p)
                    text = cell_text(cell, comp.metric_names)
                    cells.append(f"**{text}**" if cell is not None and cell.best else text)
            lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
        if comp.footnotes:
            lines += ["", *(f"- {note}" for note in comp.footnotes)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(a, b)
    return text


def to_latex(comparisons: Sequence[Comparison], paper: bool = False) -> str:
    """One booktabs ``tabular`` per comparison, best per row in ``\\textbf``."""
    blocks = []
    for comp in comparisons:
        cols = columns(comp, paper)
        lines = [f"% {comp.title}; {metrics_caption(comp)}",
                 r"\begin{tabular}{l" + "r" * len(cols) + "}", r"\toprule",
                 "Remaining weights & " + " & ".join(_latex_escape(h) for _, _, h in cols) + r" \\",
                 r"\midrule"]
        for row in comp.rows:
            cells = []
            for kind, p, _ in cols:
                if kind == "paper":
                    cells.append(paper_text(row.paper.get(p), comp.metric_names).replace("–", "--"))
                else:
                    cell = row.cells.get(p)
                    text = cell_text(cell, comp.metric_names, pm=r"$\pm$", mark=r"$^\dagger$").replace("–", "--")
                    cells.append(rf"\textbf{{{text}}}" if cell is not None and cell.best else text)
            lines.append(_latex_escape(row.label) + " & " + " & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        lines += [f"% $^\\dagger$ {note.removeprefix(WARNING_MARK).strip()}" for note in comp.footnotes]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


CSV_FIELDS = ("task", "model", "distill_teacher", "remaining_pct", "sparsity_pct", "pruner", "source",
              "metric", "mean", "std", "n", "seeds", "measured_remaining_pct", "best", "warnings")


def to_records(comparisons: Sequence[Comparison], paper: bool = False) -> list[dict[str, Any]]:
    """One flat record per (table, level, pruner, metric), ours and (with ``paper``) the paper's."""
    records = []
    for comp in comparisons:
        for row in comp.rows:
            common = {"task": comp.task, "model": comp.model, "distill_teacher": comp.distill_teacher,
                      "remaining_pct": row.remaining_pct, "sparsity_pct": round(100 - row.remaining_pct, 4)}
            for p in comp.pruners:
                cell = row.cells.get(p)
                if cell is not None:
                    for m, stat in cell.metrics.items():
                        records.append({**common, "pruner": p, "source": "ours", "metric": m,
                                        "mean": stat.mean, "std": stat.std, "n": stat.n,
                                        "seeds": cell.seeds,
                                        "measured_remaining_pct": cell.measured_remaining_pct.mean,
                                        "best": cell.best, "warnings": cell.warnings})
                if paper and p in row.paper:
                    for m, value in row.paper[p].items():
                        records.append({**common, "pruner": p, "source": PAPER_LABEL, "metric": m,
                                        "mean": value, "std": None, "n": None, "seeds": [],
                                        "measured_remaining_pct": None, "best": False, "warnings": []})
    return records


def to_csv(comparisons: Sequence[Comparison], paper: bool = False) -> str:
    """Long-format CSV (:data:`CSV_FIELDS`): a line per table, level, pruner, source and metric."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for rec in to_records(comparisons, paper):
        writer.writerow({**rec, "distill_teacher": rec["distill_teacher"] or "",
                         "std": "" if rec["std"] is None else rec["std"],
                         "n": "" if rec["n"] is None else rec["n"],
                         "seeds": " ".join(map(str, rec["seeds"])), "warnings": " | ".join(rec["warnings"]),
                         "measured_remaining_pct": "" if rec["measured_remaining_pct"] is None
                         else rec["measured_remaining_pct"]})
    return buf.getvalue()


def to_json(comparisons: Sequence[Comparison], paper: bool = False) -> str:
    """Nested JSON: a table per comparison, a row per level, a cell per pruner with every metric's
    mean, std and n, the seeds and run folders."""
    out = []
    for comp in comparisons:
        rows = []
        for row in comp.rows:
            cells = {p: {"metrics": {m: {"mean": s.mean, "std": s.std, "n": s.n} for m, s in c.metrics.items()},
                         "seeds": c.seeds, "measured_remaining_pct": c.measured_remaining_pct.mean,
                         "best": c.best, "run_dirs": [r["run_dir"] for r in c.runs], "warnings": c.warnings}
                     for p, c in row.cells.items()}
            entry = {"remaining_pct": row.remaining_pct, "sparsity_pct": round(100 - row.remaining_pct, 4),
                     "label": row.label, "cells": cells}
            if paper:
                entry["paper"] = row.paper
            rows.append(entry)
        out.append({"task": comp.task, "model": comp.model, "distill_teacher": comp.distill_teacher,
                    "metric_names": comp.metric_names, "headline_metric": comp.headline,
                    "pruners": comp.pruners, "rows": rows,
                    **({"paper_source": PAPER_LABEL} if paper else {})})
    return json.dumps(out, indent=2) + "\n"


# --------------------------------------------------------------------------------------------
# Figure


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
        dense = _dense_name(comp)
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
