"""The settings runs of one table must share to be compared, and the report of those that differ.

The paper gives every method the same data and budget; numbers trained or evaluated otherwise do
not compare. Every key that changes the numbers (:mod:`movprune.identity`) counts, except those the
table lays out: the seed a cell averages over, the rows' and columns' axes, each method's own keys
and pattern (part of its column), and the keys a table is grouped by (task, model, teacher).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from movprune import identity
from movprune.experiments.compare.variants import run_settings
from movprune.pruners.config import METHOD_SPECIFIC_KEYS

#: Keys a table shows rather than checks: its axes, each method's own keys, and what groups tables.
LAID_OUT = frozenset({"seed", "pruner.method", "pruner.remaining_pct", "pruner.pattern", "pruner.block_shape",
                      "pruner.bias_correction", "task", "model", "distill.teacher",
                      *(f"pruner.{k}" for k in METHOD_SPECIFIC_KEYS)})


def _checked_settings(result: dict[str, Any]) -> dict[str, Any] | None:
    settings = run_settings(result)
    if settings is not None and result.get("pruner") == "none":  # a dense run has no schedule
        settings = {k: v for k, v in settings.items() if not k.startswith("pruner.")}
    return settings


def setting_differences(runs: Sequence[dict[str, Any]], laid_out: Iterable[str] = ()) -> list[str]:
    """One line per setting whose value differs between ``runs`` (keys of ``laid_out`` and
    :data:`LAID_OUT` aside): each value with how many runs have it and, for the rarer values, which
    runs; plus a line when some runs (not all) have no readable ``recipe.yaml`` and so could not be
    checked."""
    known = {r["run_dir"]: s for r in runs if (s := _checked_settings(r)) is not None}
    ignore = LAID_OUT | set(laid_out)
    lines = []
    for key in identity.setting_differences(known, ignore):
        # Among the runs that have the key: a dense run without pruner keys differs in nothing.
        having = {d: s for d, s in known.items() if key in s}
        by_value = identity.setting_differences(having).get(key)
        if not by_value:
            continue
        ranked = sorted(by_value.items(), key=lambda kv: -len(kv[1]))
        parts = [f"{value}: {len(dirs)} run{'s' if len(dirs) > 1 else ''}" for value, dirs in ranked[:1]]
        for value, dirs in ranked[1:]:
            shown = ", ".join(dirs[:3]) + (f", ... ({len(dirs) - 3} more)" if len(dirs) > 3 else "")
            parts.append(f"{value}: {shown}")
        lines.append(f"{key} differs ({'; '.join(parts)})")
    unchecked = [r["run_dir"] for r in runs if r["run_dir"] not in known]
    if known and unchecked:
        shown = ", ".join(unchecked[:3]) + (f", ... ({len(unchecked) - 3} more)" if len(unchecked) > 3 else "")
        lines.append(f"{len(unchecked)} of {len(runs)} runs have no readable recipe.yaml, so their settings "
                     f"were not checked ({shown})")
    return lines
