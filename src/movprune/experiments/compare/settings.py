"""The settings runs of one table must share to be compared, and the report of those that differ."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from movprune.experiments.compare.variants import saved_recipe

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
