"""Comparing finished runs: the paper's Table 2 (rows = remaining weights, columns = pruners) and
Figure 2 (headline metric against remaining weights), from run folders.

Pure logic: functions here return data and text; the CLI prints them. One concern per module:
:mod:`.discovery` finds runs, :mod:`.settings` checks they compare, :mod:`.grouping` builds the
tables of :mod:`.table`, :mod:`.paper` holds the paper's numbers, :mod:`.render` makes the cells
every text format of :mod:`.formats` (and the CLI's Rich table) shows, :mod:`.figure` plots.
"""

from movprune.experiments.compare.discovery import Scan, scan_runs
from movprune.experiments.compare.figure import plot
from movprune.experiments.compare.formats import CSV_FIELDS, to_csv, to_json, to_latex, to_markdown, to_records
from movprune.experiments.compare.grouping import build_comparisons, run_level
from movprune.experiments.compare.paper import PAPER_LABEL, paper_numbers, paper_tasks
from movprune.experiments.compare.render import (
    ShownCell,
    cell_text,
    columns,
    metrics_caption,
    paper_text,
    pruner_header,
    shown_rows,
)
from movprune.experiments.compare.settings import COMPARABLE_SETTINGS, run_settings, setting_differences
from movprune.experiments.compare.table import WARNING_MARK, Cell, Comparison, Row, Stat, level_label

__all__ = [
    "COMPARABLE_SETTINGS", "CSV_FIELDS", "PAPER_LABEL", "WARNING_MARK", "Cell", "Comparison", "Row", "Scan",
    "ShownCell", "Stat", "build_comparisons", "cell_text", "columns", "level_label", "metrics_caption",
    "paper_numbers", "paper_tasks", "paper_text", "plot", "pruner_header", "run_level", "run_settings",
    "scan_runs", "setting_differences", "shown_rows", "to_csv", "to_json", "to_latex", "to_markdown",
    "to_records",
]
