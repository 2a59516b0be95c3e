"""Checks of the values of own-data rows, before anything trains on them.

Every check returns the positions (within the split) of the rows that fail it; the family task
names the file and lines (:meth:`DatasetSource.where`) and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

#: Rows named in a message, at most.
SHOWN_ROWS = 5


def empty_text_rows(values: Sequence[Any]) -> list[int]:
    """Rows whose text is missing (an empty cell, JSON null) or only whitespace."""
    return [i for i, v in enumerate(values) if v is None or (isinstance(v, str) and not v.strip())]


def as_text(values: Sequence[Any]) -> list[str]:
    """The values as text: numbers (a JSON number in a text field) as Python writes them."""
    return [v if isinstance(v, str) else str(v) for v in values]


def is_number(value: Any) -> bool:
    """An int or float label (a bool is neither)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def mixed_kinds(values: Sequence[Any]) -> tuple[list[int], list[int]] | None:
    """(string rows, other rows) when a label column mixes strings with numbers, else None."""
    strings = [i for i, v in enumerate(values) if isinstance(v, str)]
    others = [i for i, v in enumerate(values) if v is not None and not isinstance(v, str)]
    return (strings, others) if strings and others else None


def not_class_id_rows(values: Sequence[Any]) -> list[int]:
    """Rows whose numeric label is not a whole number >= 0 (or not a number at all)."""
    return [i for i, v in enumerate(values) if v is not None and not isinstance(v, str)
            and not (is_number(v) and math.isfinite(v) and float(v).is_integer() and v >= 0)]


def not_finite_rows(values: Sequence[Any]) -> list[int]:
    """Rows whose regression target is not a finite number."""
    bad = []
    for i, v in enumerate(values):
        try:
            if isinstance(v, bool) or not math.isfinite(float(v)):
                bad.append(i)
        except (TypeError, ValueError):
            bad.append(i)
    return bad


def label_key(value: Any) -> str:
    """A label as the class name it stands for: strings as written, whole numbers as ``"3"``."""
    if isinstance(value, str):
        return value
    return str(int(value))
