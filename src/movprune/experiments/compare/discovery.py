"""Finding finished runs under folders for a comparison."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from movprune import results
from movprune.errors import RunFailedError


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
