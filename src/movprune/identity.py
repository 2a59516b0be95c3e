"""Run identity: which recipe keys make two runs the same experiment, asked by every rule that needs it.

Every key of a recipe has one kind:

* **output** (``name``, ``output_dir``): where results go. Two runs written to different folders are
  still the same experiment.
* **operational**: how a run is watched and saved, never what it computes:

  - ``train.save_every_steps``, ``train.keep_checkpoints``: a checkpoint is written between steps and
    a resumed run continues bit for bit, so when and how many are kept changes no number;
  - ``train.report_to``: live trackers read the logged numbers, they do not feed back into training;
  - ``train.log_every_steps``: logging turns the step's loss tensors into numbers; it adds a host
    synchronisation, not a computation;
  - ``train.eval_every_steps``: a mid-run evaluation runs the model in evaluation mode and leaves the
    pruners' state, the weights and the training random streams as they were, so the final result
    is that of the same run without it.

* **axis**: what a sweep varies by construction (``pruner.method``, ``pruner.remaining_pct``,
  ``seed``). Axes change the numbers (they are material); their kind says that a comparison lays
  them out (rows, columns, the seeds a cell averages) instead of warning that they differ.
* **material**: everything else changes the numbers. That includes ``train.eval_batch_size`` (the
  evaluation batch sets the padded length and so the order of floating-point sums: metrics can move
  in their last digits), ``data_dir`` (another folder may hold other data) and every key of the
  ``dataset:``, ``pruner:`` and ``distill:`` sections. A sweep's ``--grid`` may vary any material key.

A folder the library API wrote (``result.json``'s ``source`` is :data:`LIBRARY_SOURCE`) was trained
by its user's own loop: its ``recipe.yaml`` records the settings the user gave and nothing more, so
a key it lacks is unknown, not movprune's default (:func:`recorded_settings`), and it is no recipe
that a resume or a sweep can take as the one it was trained with (:func:`load_saved_recipe`).

Resume (:func:`same_experiment`), a sweep's finished-run check, ``compare``'s cells and warnings
(:func:`setting_differences`) and the teacher cache (:func:`experiment_key`) all ask this module.
No torch at import: validating or comparing recipes must not need it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ValidationError

from movprune import results
from movprune.errors import RecipeError
from movprune.pruners.config import CONFIGS, without_null_method_keys
from movprune.recipe import Recipe, read_recipe_data

Kind = Literal["output", "operational", "axis", "material"]

#: Keys naming where a run's files go.
OUTPUT_KEYS = frozenset({"name", "output_dir"})
#: Keys that change what is saved, logged or reported, never a number (see the module's docstring).
OPERATIONAL_KEYS = frozenset({"train.save_every_steps", "train.keep_checkpoints", "train.report_to",
                              "train.log_every_steps", "train.eval_every_steps"})
#: Keys a sweep varies by construction (``--pruners``, ``--remaining``, ``--seeds``).
AXIS_KEYS = frozenset({"pruner.method", "pruner.remaining_pct", "seed"})
#: Kinds that change the numbers: two runs differing in one of them are different experiments.
NUMBER_KINDS: tuple[Kind, ...] = ("axis", "material")
#: ``result.json``'s ``source`` in a run folder written through the library API.
LIBRARY_SOURCE = "library"


def _sections(annotation: Any) -> list[type[BaseModel]]:
    """The schema sections (pydantic models) a field holds: one, or a union's members."""
    found = [c for c in (annotation, *get_args(annotation)) if isinstance(c, type) and issubclass(c, BaseModel)]
    return list(dict.fromkeys(found))


def _leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name, field in model.model_fields.items():
        members = _sections(field.annotation)
        if name == "pruner" and model is Recipe:
            members = list(CONFIGS.values())  # every method's keys, not only the default one's
        if members:
            for member in members:
                keys += _leaf_keys(member, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return list(dict.fromkeys(keys))


def _static_kind(key: str) -> Kind:
    if key in OUTPUT_KEYS:
        return "output"
    if key in OPERATIONAL_KEYS:
        return "operational"
    if key in AXIS_KEYS:
        return "axis"
    return "material"


@functools.cache
def key_kinds() -> dict[str, Kind]:
    """Every key of the recipe schema (every pruning method's keys included), dotted, with its kind."""
    return {key: _static_kind(key) for key in _leaf_keys(Recipe)}


def kind_of(key: str) -> Kind | None:
    """The kind of a dotted key; a key inside a mapping-valued key (``dataset.files.train``) has that
    key's kind; a section (``train``) is material when any of its keys is. None for an unknown key."""
    kinds = key_kinds()
    if key in kinds:
        return kinds[key]
    parts = key.split(".")
    for n in range(len(parts) - 1, 0, -1):
        if (prefix := ".".join(parts[:n])) in kinds:
            return kinds[prefix]
    inside = {k for k, v in kinds.items() if k.startswith(key + ".")}
    if inside:
        kinds_inside = {kinds[k] for k in inside}
        return kinds_inside.pop() if len(kinds_inside) == 1 else "material"
    return None


def sweepable_problem(key: str) -> str | None:
    """Why ``key`` cannot be a sweep's ``--grid`` axis (None when it can): an unknown, output or
    operational key, or one the sweep's own options set."""
    from movprune.suggest import did_you_mean

    kind = kind_of(key)
    if kind is None:
        return f"unknown recipe key ({did_you_mean(key, list(key_kinds()), listing='valid keys')})"
    if kind == "output":
        return "an output key (where results go): it names folders, it is not an experiment's setting"
    if kind == "operational":
        return ("an operational key (how a run is saved, logged or reported): it changes no number, so "
                "its runs would all be the same experiment")
    if key in AXIS_KEYS:
        option = {"pruner.method": "--pruners", "pruner.remaining_pct": "--remaining", "seed": "--seeds"}[key]
        return f"the sweep's own axis: use {option}"
    return None


# --------------------------------------------------------------------------------------------
# Flattening and reading


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested recipe mapping as ``{"train.lr": 3e-05, ...}``. A section set to null stays one key
    (``distill: None``); an empty mapping stays one key too, so that it differs from a missing one."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def recipe_mapping(recipe: Recipe | Mapping[str, Any]) -> dict[str, Any]:
    """A recipe as a plain mapping with every default filled in when it validates as a
    :class:`~movprune.recipe.Recipe` (schema only: no registry, no torch). A mapping that does not
    validate (a file of another movprune version) is kept as written, less the null method keys of
    files written before the per-method pruner configs."""
    if isinstance(recipe, Recipe):
        return recipe.model_dump(mode="json")
    try:
        return Recipe.model_validate(dict(recipe)).model_dump(mode="json")
    except (ValidationError, TypeError, ValueError):
        data = dict(recipe)
        if isinstance(data.get("pruner"), dict):
            data["pruner"] = without_null_method_keys(data["pruner"])
        return data


def read_saved_recipe(run_dir: str | Path) -> dict[str, Any]:
    """The ``recipe.yaml`` of a run folder as :func:`recipe_mapping` gives it (files written before
    the per-method pruner configs included). Raises :class:`RecipeError` when it is missing or not YAML."""
    return recipe_mapping(read_recipe_data(Path(run_dir) / results.RECIPE_FILE))


def saved_recipe_or_none(run_dir: str | Path) -> dict[str, Any] | None:
    """:func:`read_saved_recipe`, or None when the file is missing or unreadable."""
    try:
        return read_saved_recipe(run_dir)
    except (OSError, RecipeError):
        return None


def written_by_library(run_dir: str | Path) -> bool:
    """Whether ``run_dir``'s ``result.json`` says the library API wrote it (the user's own loop trained it)."""
    try:
        data = json.loads((Path(run_dir) / results.RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.get("source") == LIBRARY_SOURCE


def load_saved_recipe(run_dir: str | Path) -> Recipe:
    """The validated recipe a run folder was trained with (schema and registries); raises
    :class:`RecipeError` naming the file, also for a folder the library API wrote (no movprune recipe
    trained it: its unrecorded settings are unknown)."""
    from movprune.recipe import validate_recipe

    path = Path(run_dir) / results.RECIPE_FILE
    if written_by_library(run_dir):
        raise RecipeError(str(path), ["written by movprune's library API: it records the settings of the user's own "
                                      "training loop, not a recipe `movprune run` trained with"])
    return validate_recipe(read_recipe_data(path), str(path))


def recorded_settings(run_dir: str | Path, kinds: Iterable[Kind] = NUMBER_KINDS) -> dict[str, Any] | None:
    """The keys of ``kinds`` that ``run_dir``'s ``recipe.yaml`` writes out, flattened, with no default
    filled in (a library folder's: what its user gave); None when the file is missing or unreadable.
    A ``train.max_seq_length`` of null is the task's default written out, as in :func:`settings`."""
    try:
        data = dict(read_recipe_data(Path(run_dir) / results.RECIPE_FILE))
    except (OSError, RecipeError, TypeError, ValueError):
        return None
    if isinstance(data.get("pruner"), dict):
        data["pruner"] = without_null_method_keys(data["pruner"])
    wanted = set(kinds)
    flat = flatten(data)
    out = {k: v for k, v in flat.items() if (kind_of(k) or "material") in wanted}
    if "train.max_seq_length" in out and out["train.max_seq_length"] is None:
        out["train.max_seq_length"] = _task_default_seq_length(flat.get("task")) or None
    return out


# --------------------------------------------------------------------------------------------
# The rule


def _task_default_seq_length(task: Any) -> int | None:
    from movprune import tasks  # deferred: the tasks import torch

    try:
        return tasks.default_max_seq_length(str(task))
    except Exception:  # an unknown task: its default is unknown, the key compares as written
        return None


def settings(recipe: Recipe | Mapping[str, Any], kinds: Iterable[Kind] = NUMBER_KINDS) -> dict[str, Any]:
    """The recipe's keys of ``kinds`` (by default those that change the numbers), flattened.

    A null ``train.max_seq_length`` is the task's default written out: leaving it to the task and
    writing the same number are one setting."""
    wanted = set(kinds)
    flat = flatten(recipe_mapping(recipe))
    out = {k: v for k, v in flat.items() if (kind_of(k) or "material") in wanted}
    if "train.max_seq_length" in out and out["train.max_seq_length"] is None:
        out["train.max_seq_length"] = _task_default_seq_length(flat.get("task")) or None
    return out


def same_experiment(a: Recipe | Mapping[str, Any], b: Recipe | Mapping[str, Any]) -> list[str]:
    """The keys that change the numbers (axis or material) whose values differ between ``a`` and
    ``b``, sorted; empty when they are the same experiment."""
    sa, sb = settings(a), settings(b)
    return sorted(k for k in set(sa) | set(sb) if sa.get(k) != sb.get(k))


def describe_differences(old: Recipe | Mapping[str, Any], new: Recipe | Mapping[str, Any],
                         keys: Sequence[str]) -> list[str]:
    """``key: old -> new`` (JSON values) for each of ``keys``."""
    so, sn = settings(old), settings(new)
    return [f"{k}: {json.dumps(so.get(k))} -> {json.dumps(sn.get(k))}" for k in keys]


def experiment_key(recipe: Recipe | Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
    """A hash of the keys that change the numbers (and of ``extra``, e.g. data fingerprints): equal
    for two recipes that are the same experiment, whatever their output and operational keys."""
    payload = {"settings": settings(recipe), "extra": dict(extra or {})}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def setting_differences(named: Mapping[str, Mapping[str, Any]], ignore: Iterable[str] = ()
                        ) -> dict[str, dict[str, list[str]]]:
    """Among settings by name (each as :func:`settings` gives them, plus any effective values such
    as ``steps``), every key outside ``ignore`` whose value differs: ``{key: {JSON value: [names]}}``,
    keys sorted. A key one run lacks counts as null for it."""
    ignored = set(ignore)
    keys = sorted({k for s in named.values() for k in s} - ignored)
    out: dict[str, dict[str, list[str]]] = {}
    for key in keys:
        by_value: dict[str, list[str]] = {}
        for name, s in named.items():
            by_value.setdefault(json.dumps(s.get(key), sort_keys=True, default=str), []).append(name)
        if len(by_value) > 1:
            out[key] = by_value
    return out
