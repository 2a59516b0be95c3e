"""What every benchmark does with its result: print the JSON report and, with ``--out``, also write
it (atomically) to that file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def emit(report: dict[str, Any], out: Path | None) -> None:
    """Print ``report`` as indented JSON on stdout and write the same text to ``out`` when given."""
    text = json.dumps(report, indent=2) + "\n"
    if out:
        from movprune.io import atomic_write_text

        atomic_write_text(out, text)
    sys.stdout.write(text)
