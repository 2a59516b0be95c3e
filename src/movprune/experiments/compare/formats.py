"""The text formats of a comparison (Markdown, LaTeX, CSV, JSON), each rendering the cells of
:func:`~movprune.experiments.compare.render.shown_rows`."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from movprune.experiments.compare.paper import PAPER_LABEL
from movprune.experiments.compare.render import (
    axes_text,
    column_label,
    columns,
    footnotes,
    metrics_caption,
    row_header,
    shown_rows,
)
from movprune.experiments.compare.table import LEVEL, WARNING_MARK, Cell, Comparison


def to_markdown(comparisons: Sequence[Comparison], paper: bool = False) -> str:
    """One Markdown table per comparison, best per row in bold."""
    blocks = []
    for comp in comparisons:
        cols = columns(comp, paper)
        lines = [f"**{comp.title}** — {metrics_caption(comp)}", "",
                 f"| {row_header(comp)} | " + " | ".join(h for _, _, h in cols) + " |",
                 "|---|" + "---:|" * len(cols)]
        for row, shown in shown_rows(comp, paper):
            cells = [f"**{c.text}**" if c.best else c.text for c in shown]
            lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
        if footnotes(comp):
            lines += ["", *(f"- {note}" for note in footnotes(comp))]
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
                 _latex_escape(row_header(comp).capitalize() if comp.row_axis == LEVEL else row_header(comp))
                 + " & " + " & ".join(_latex_escape(h) for _, _, h in cols) + r" \\",
                 r"\midrule"]
        for row, shown in shown_rows(comp, paper, pm=r"$\pm$", mark=r"$^\dagger$"):
            cells = []
            for c in shown:
                text = c.text.replace("–", "--")
                cells.append(rf"\textbf{{{text}}}" if c.best else text)
            lines.append(_latex_escape(row.label) + " & " + " & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        lines += [f"% $^\\dagger$ {note.removeprefix(WARNING_MARK).strip()}" for note in footnotes(comp)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


CSV_FIELDS = ("task", "model", "distill_teacher", "remaining_pct", "sparsity_pct", "pruner", "source",
              "metric", "mean", "std", "n", "seeds", "measured_remaining_pct", "best", "warnings", "row_axis",
              "row", "column")


def _level(row, cell: Cell | None) -> float | None:
    if row.axis == LEVEL:
        return row.value
    return cell.level if cell is not None else None


def to_records(comparisons: Sequence[Comparison], paper: bool = False) -> list[dict[str, Any]]:
    """One flat record per (table, row, column, metric), ours and (with ``paper``) the paper's.
    ``pruner`` is the column's label; ``row_axis``/``row`` name the row (the level, or another key's
    value), ``column`` the column's other axes."""
    records = []
    for comp in comparisons:
        for row, shown in shown_rows(comp, paper):
            for c in shown:
                level = _level(row, c.cell)
                common = {"task": comp.task, "model": comp.model, "distill_teacher": comp.distill_teacher,
                          "remaining_pct": level, "sparsity_pct": None if level is None else round(100 - level, 4),
                          "row_axis": comp.row_axis, "row": row.label,
                          "column": axes_text(c.column.axes)}
                if c.cell is not None:
                    for m, stat in c.cell.metrics.items():
                        records.append({**common, "pruner": c.label, "source": "ours", "metric": m,
                                        "mean": stat.mean, "std": stat.std, "n": stat.n,
                                        "seeds": c.cell.seeds,
                                        "measured_remaining_pct": c.cell.measured_remaining_pct.mean,
                                        "best": c.cell.best, "warnings": c.cell.warnings})
                if c.paper_values is not None:
                    for m, value in c.paper_values.items():
                        records.append({**common, "pruner": c.label, "source": PAPER_LABEL, "metric": m,
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
                         "remaining_pct": "" if rec["remaining_pct"] is None else rec["remaining_pct"],
                         "sparsity_pct": "" if rec["sparsity_pct"] is None else rec["sparsity_pct"],
                         "measured_remaining_pct": "" if rec["measured_remaining_pct"] is None
                         else rec["measured_remaining_pct"]})
    return buf.getvalue()


def _cell_json(cell: Cell) -> dict[str, Any]:
    return {"metrics": {m: {"mean": s.mean, "std": s.std, "n": s.n} for m, s in cell.metrics.items()},
            "seeds": cell.seeds, "measured_remaining_pct": cell.measured_remaining_pct.mean,
            "best": cell.best, "run_dirs": [r["run_dir"] for r in cell.runs], "warnings": cell.warnings}


def to_json(comparisons: Sequence[Comparison], paper: bool = False) -> str:
    """Nested JSON: a table per comparison, a row per level, a cell per pruner with every metric's
    mean, std and n, the seeds and run folders."""
    out = []
    for comp in comparisons:
        rows = []
        for row, shown in shown_rows(comp, paper):
            ours = {c.column: (c.label, c.cell) for c in shown if c.cell is not None}
            # Cells in the order their runs were found, as this format has always listed them.
            cells = {ours[c][0]: _cell_json(ours[c][1]) for c in row.cells}
            if row.axis == LEVEL:
                entry = {"remaining_pct": row.value, "sparsity_pct": round(100 - row.value, 4),
                         "label": row.label, "cells": cells}
            else:
                entry = {"axis": row.axis, "value": row.value, "label": row.label, "cells": cells}
            if paper:
                entry["paper"] = row.paper
            rows.append(entry)
        out.append({"task": comp.task, "model": comp.model, "distill_teacher": comp.distill_teacher,
                    "metric_names": comp.metric_names, "headline_metric": comp.headline,
                    "pruners": [column_label(c) for c in comp.columns],
                    "row_axis": comp.row_axis, "column_axis": comp.column_axis, "rows": rows,
                    **({"paper_source": PAPER_LABEL} if paper else {})})
    return json.dumps(out, indent=2) + "\n"
