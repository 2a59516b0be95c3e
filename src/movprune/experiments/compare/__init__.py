"""Comparing finished runs: the paper's Table 2 (rows = remaining weights, columns = pruners) and
Figure 2 (headline metric against remaining weights), from run folders; any setting a sweep varied
may be the rows, the columns or the plot's x instead.

Pure logic: functions here return data and text; the CLI prints them. One concern per module:
:mod:`.discovery` finds runs, :mod:`.settings` checks they compare, :mod:`.grouping` builds the
tables of :mod:`.table`, :mod:`.paper` holds the paper's numbers, :mod:`.render` makes the cells
every text format of :mod:`.formats` (and the CLI's Rich table) shows, :mod:`.figure` plots.
"""

from movprune.experiments.compare.discovery import Scan, scan_runs
from movprune.experiments.compare.figure import plot
from movprune.experiments.compare.formats import CSV_FIELDS, to_csv, to_json, to_latex, to_markdown, to_records
from movprune.experiments.compare.grouping import build_comparisons, check_axes, run_level
from movprune.experiments.compare.paper import PAPER_LABEL, paper_numbers, paper_tasks
from movprune.experiments.compare.render import (
    ShownCell,
    cell_text,
    column_header,
    column_label,
    columns,
    footnotes,
    metrics_caption,
    paper_text,
    row_header,
    shown_rows,
)
from movprune.experiments.compare.settings import setting_differences
from movprune.experiments.compare.table import (
    LEVEL,
    METHOD,
    WARNING_MARK,
    Cell,
    Column,
    Comparison,
    Row,
    Stat,
    level_label,
)
from movprune.experiments.compare.variants import run_settings

__all__ = [
    "CSV_FIELDS", "LEVEL", "METHOD", "PAPER_LABEL", "WARNING_MARK", "Cell", "Column", "Comparison", "Row",
    "Scan", "ShownCell", "Stat", "build_comparisons", "cell_text", "check_axes", "column_header", "column_label",
    "columns", "footnotes", "level_label", "metrics_caption", "paper_numbers", "paper_tasks", "paper_text", "plot",
    "row_header", "run_level", "run_settings", "scan_runs", "setting_differences", "shown_rows", "to_csv",
    "to_json", "to_latex", "to_markdown", "to_records",
]
