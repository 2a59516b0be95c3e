"""Exporting a pruned run as a model that is really smaller (compact, sparse) and faster (compact,
sparse, ONNX).

Library code: no printing. ``movprune export`` (``movprune.cli.export``) and
``benchmarks/export_speed.py`` are built on :func:`export_run`, :func:`load_export`,
:func:`folder_stats` and :mod:`movprune.export.bench`.
"""

from movprune.export.api import (
    EXPORT_INFO,
    FORMATS,
    ONNX_SOURCES,
    ExportResult,
    export_run,
    load_export,
    load_hint,
    load_run_model,
)
from movprune.export.sizes import FolderStats, export_format, folder_stats
from movprune.export.sparse import load_sparse

__all__ = ["EXPORT_INFO", "FORMATS", "ONNX_SOURCES", "ExportResult", "FolderStats", "export_format", "export_run",
           "folder_stats", "load_export", "load_hint", "load_run_model", "load_sparse"]
