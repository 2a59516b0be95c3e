"""Which runs may share a cell of a comparison: those whose settings differ in nothing but the seed.

A cell reports "mean ± std over seeds"; averaging two seed-42 runs trained with different learning
rates into it would print a statistic of nothing. Settings are the keys of each run's saved
``recipe.yaml`` that change the numbers (:mod:`movprune.identity`: output and operational keys such
as ``train.save_every_steps`` are not settings) plus the effective budget from ``result.json``. A
folder the library API wrote has only the settings its ``recipe.yaml`` records (what its user gave):
it shares a cell with ``movprune run`` runs only when those say every setting, with equal values.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from movprune import identity, results

#: Keys a cell does not split on by default: the seed (the axis a cell averages over) and the
#: remaining-weights level (the comparison's row).
NOT_SETTINGS = frozenset({"seed", "pruner.remaining_pct"})
#: Effective settings recorded in ``result.json`` rather than in the recipe.
FROM_RESULT = ("steps", "num_processes")

#: Recipe keys that set the effective ``steps``.
BUDGET_KEYS = ("train.max_steps", "train.epochs")
#: The columns' extra axes of a group: ``(key, value)`` pairs; None when its settings are unknown.
Axes = tuple[tuple[str, Any], ...]


def saved_recipe(result: dict[str, Any]) -> dict[str, Any] | None:
    """The run's ``recipe.yaml`` as :func:`movprune.identity.read_saved_recipe` reads it; None when
    it is missing or unreadable."""
    run_dir = result.get("run_dir")
    return None if run_dir is None else identity.saved_recipe_or_none(run_dir)


@functools.lru_cache(maxsize=4096)
def _recipe_settings(run_dir: str, stamp: tuple[int, int], as_recorded: bool) -> str | None:
    """The settings of a run folder's ``recipe.yaml`` as JSON (``as_recorded``: only the keys it writes,
    no default filled in), remembered per file version (``stamp``: size and modification time): a
    comparison asks for each run's several times."""
    if as_recorded:
        recorded = identity.recorded_settings(run_dir)
        return None if recorded is None else json.dumps(recorded, default=str)
    recipe = identity.saved_recipe_or_none(run_dir)
    return None if recipe is None else json.dumps(identity.settings(recipe), default=str)


def run_settings(result: dict[str, Any]) -> dict[str, Any] | None:
    """Every setting of a run that changes its numbers, as ``{"train.lr": 3e-05, ...}``, with the
    effective :data:`FROM_RESULT` values; None when its ``recipe.yaml`` is missing or unreadable."""
    run_dir = result.get("run_dir")
    if run_dir is None:
        return None
    try:
        st = (Path(run_dir) / results.RECIPE_FILE).stat()
    except OSError:
        return None
    text = _recipe_settings(str(run_dir), (st.st_size, st.st_mtime_ns),
                            result.get("source") == identity.LIBRARY_SOURCE)
    if text is None:
        return None
    settings = json.loads(text)
    settings.update({key: result.get(key) for key in FROM_RESULT})
    return settings


def hashable(value: Any) -> Any:
    """``value`` with lists as tuples and mappings as sorted item tuples (a column key holds it)."""
    if isinstance(value, list | tuple):
        return tuple(hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), hashable(v)) for k, v in value.items()))
    return value


def split_by_settings(runs: Sequence[dict[str, Any]], ignore: Iterable[str] = NOT_SETTINGS
                      ) -> tuple[list[str], list[tuple[Axes | None, list[dict[str, Any]]]]]:
    """Group ``runs`` so that each group differs in the keys of ``ignore`` only.

    Returns the keys that differ between groups and ``(axes, runs)`` per group; ``axes`` holds the
    group's values of those keys (``(("train.lr", 0.001),)``), empty when there is one group, None
    for runs without a readable recipe (their settings are unknown: a group of their own).
    """
    ignored = set(ignore)
    groups: dict[str, tuple[dict[str, Any] | None, list[dict[str, Any]]]] = {}
    for r in runs:
        settings = run_settings(r)
        if settings is not None:
            settings = {k: v for k, v in settings.items() if k not in ignored}
        key = "?" if settings is None else json.dumps(settings, sort_keys=True, default=str)
        groups.setdefault(key, (settings, []))[1].append(r)
    if len(groups) < 2:
        return [], [((), list(runs))]
    known = [s for s, _ in groups.values() if s is not None]
    differing = sorted(identity.setting_differences({str(i): s for i, s in enumerate(known)}))
    if "steps" in differing and any(k in differing for k in BUDGET_KEYS):
        differing.remove("steps")  # the budget key says it (the groups stay apart by steps too)
    out: list[tuple[Axes | None, list[dict[str, Any]]]] = [
        (None if s is None else tuple((k, hashable(s.get(k))) for k in differing), members)
        for s, members in groups.values()]
    out.sort(key=lambda group: json.dumps(group[0], default=str))
    return differing, out
