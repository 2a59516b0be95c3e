"""Planning a sweep: every combination of method, remaining-weights level, seed and ``--grid``
values, each a recipe validated (and its inputs checked) before the first run starts."""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from movprune import results
from movprune.errors import RecipeError
from movprune.experiments.sweep.axes import GridAxis, _unique
from movprune.recipe import Recipe, _parse_override, apply_overrides, read_recipe_data, validate_recipe
from movprune.run_folder import check_run_name
from movprune.suggest import did_you_mean

#: Recipe keys the sweep sets itself; overriding them with key=value would be silently lost.
_SWEPT_KEYS = {"pruner.method": "--pruners", "pruner.remaining_pct": "--sparsity/--remaining",
               "seed": "--seeds"}


@dataclass(frozen=True)
class SweepRun:
    """One combination of a sweep and the validated recipe that runs it."""

    method: str
    remaining_pct: float | None
    seed: int
    recipe: Recipe
    #: The run's ``--grid`` values, ``(key, value)`` in the order the axes were given.
    grid: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        """The run folder's name inside the sweep folder."""
        return self.recipe.run_name

    @property
    def run_dir(self) -> Path:
        """Where the run writes its files."""
        return self.recipe.run_dir


def format_level(remaining_pct: float) -> str:
    """``10.0`` -> ``"10"``, ``0.5`` -> ``"0.5"`` (for names and labels)."""
    return f"{remaining_pct:g}"


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def grid_value_text(value: Any) -> str:
    """A ``--grid`` value as it appears in a run's name: ``300``, ``3e-05``, ``true``, ``32x32``
    (a list), ``null``; characters a folder name should not hold become ``_``."""
    if isinstance(value, bool) or value is None:
        text = {True: "true", False: "false", None: "null"}[value]
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, list | tuple):
        text = "x".join(grid_value_text(v) for v in value)
    else:
        text = str(value)
    return _UNSAFE.sub("_", text)


def grid_labels(keys: Sequence[str]) -> dict[str, str]:
    """How each ``--grid`` key appears in run names: its last part (``train.max_steps`` ->
    ``max_steps``), or the whole key with ``_`` for dots when two keys share the last part."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (tail if last.count(tail) == 1 else k.replace(".", "_")) for k, tail in zip(keys, last)}


def run_name(method: str, remaining_pct: float | None, seed: int,
             grid: Sequence[tuple[str, Any]] = ()) -> str:
    """``movement-r10-s1`` (10% remaining, seed 1); ``<method>-s1`` for a method without a level;
    ``--grid`` values follow, each as its key's :func:`grid_labels` and value
    (``movement-r10-s1-max_steps300-patternhybrid``)."""
    level = "" if remaining_pct is None else f"-r{format_level(remaining_pct)}"
    labels = grid_labels([k for k, _ in grid])
    return f"{method}{level}-s{seed}" + "".join(f"-{labels[k]}{grid_value_text(v)}" for k, v in grid)


def _method_levels(method: str, levels: list[float] | None) -> tuple[list[float | None], str | None]:
    """The levels a method runs at, and a problem when it cannot.

    A method that takes a target (magnitude, movement) runs once per level; one that refuses any
    target (dense fine-tuning) runs once, at the level it reports itself (100% for dense).
    """
    from movprune import pruners

    if method not in pruners.method_names():
        return [], None  # reported by validation, with a 'did you mean'
    cls = pruners.pruner_class(method)
    takes_target = not cls.check(pruners.pruner_config(method=method, remaining_pct=50.0))
    if takes_target:
        if levels is None:
            return [], (f"method '{method}' needs remaining-weight levels: pass --sparsity (e.g. "
                        "--sparsity 3,10 for 3% and 10% remaining) or set pruner.remaining_pct in the recipe")
        return list(levels), None
    own = cls(pruners.pruner_config(method=method), 1).target_remaining_pct
    return [own], None


def plan_sweep(recipe_path: str | Path, *, remaining_pcts: Sequence[float] | None = None,
               methods: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
               overrides: Sequence[str] = (), grid: Sequence[GridAxis] = ()) -> list[SweepRun]:
    """Every run of the sweep, validated, in the order they run (seed, then level, then method, then
    the ``grid`` values in the order the axes were given).

    ``None`` for an axis takes the recipe's own value. ``key=value`` overrides apply to every run.
    A method's own pruner key written in the recipe file (e.g. ``scores_init``) was chosen for the
    file's method and applies to it only; the other methods take their defaults. A pruner key given
    as an override applies to every swept method that has it (``scores_init`` to movement, not to
    magnitude), and is an error only when none of them has it.
    ``grid`` axes (:func:`~movprune.experiments.sweep.axes.parse_grid`) multiply the combinations;
    a pruner key among them must be a key of every swept method.
    Raises :class:`RecipeError` listing every problem of every combination at once.
    """
    source = str(recipe_path)
    base = read_recipe_data(recipe_path)
    problems: list[str] = []
    grid_keys = [k for k, _ in grid]
    for text in overrides:
        try:
            path, _ = _parse_override(text)
        except ValueError:
            continue  # apply_overrides reports it below
        option = _SWEPT_KEYS.get(".".join(path))
        if option:
            problems.append(f"override '{text}': the sweep sets {'.'.join(path)} itself; use {option}")
        elif ".".join(path) in grid_keys:
            problems.append(f"override '{text}': {'.'.join(path)} is also a --grid axis; give it once")
    probe = copy.deepcopy(base)
    malformed = apply_overrides(probe, list(overrides))
    if malformed:  # every combination would repeat them; nothing more can be checked
        raise RecipeError(source, problems + malformed)

    file_pruner = base.get("pruner") if isinstance(base.get("pruner"), dict) else {}
    file_method = file_pruner.get("method", "none")
    methods = list(methods) if methods else [file_method]
    registered = _registered_methods()
    for method in methods:
        if method not in registered:
            hint = did_you_mean(method, registered, listing="choose from")
            problems.append(f"--pruners: unknown pruning method '{method}' ({hint})")
    if remaining_pcts is None and file_pruner.get("remaining_pct") is not None:
        remaining_pcts = [file_pruner["remaining_pct"]]
    seeds = list(seeds) if seeds else [probe.get("seed", 42)]
    sweep_name = probe.get("name") or Path(source).stem
    name_problem = check_run_name(str(sweep_name))
    if name_problem:
        origin = "name" if probe.get("name") else f"the recipe file's name '{Path(source).stem}'"
        problems.append(f"{origin}: names the sweep's folder, and {name_problem}; set name=<sweep name>")
        sweep_name = "sweep"
    sweep_dir = Path(probe.get("output_dir") or "results") / str(sweep_name)
    overridden: dict = {}
    apply_overrides(overridden, list(overrides))
    problems += _keys_no_method_takes(overridden.get("pruner"), [m for m in methods if m in registered])
    problems += _grid_keys_every_method_takes(grid_keys, [m for m in methods if m in registered])
    if file_method in registered:  # the file's own keys were written for its method: it must have them
        own = {k: v for k, v in file_pruner.items() if k not in (overridden.get("pruner") or {})}
        problems += _keys_no_method_takes(own, [file_method])

    combos: list[tuple[int, float | None, str]] = []
    for method in methods:
        levels, problem = _method_levels(method, list(remaining_pcts) if remaining_pcts is not None else None)
        if problem:
            problems.append(problem)
        combos += [(seed, level, method) for seed in seeds for level in levels]
    combos.sort(key=lambda c: (seeds.index(c[0]), -(c[1] if c[1] is not None else 101),
                               methods.index(c[2])))

    plan: list[SweepRun] = []
    per_combo: dict[str, list[str]] = {}
    points = [tuple(zip(grid_keys, values)) for values in itertools.product(*(v for _, v in grid))]
    names: dict[str, tuple] = {}
    for (seed, level, method), point in itertools.product(combos, points):
        data = copy.deepcopy(base)
        if isinstance(data.get("pruner"), dict) and method != file_method:
            _drop_method_keys(data["pruner"])
        apply_overrides(data, list(overrides))
        problem = _set_values(data, point)
        if problem:
            problems.append(problem)
            continue
        if not isinstance(data.get("pruner"), dict):
            data["pruner"] = {}
        _drop_keys_of_other_methods(data["pruner"], method)
        name = run_name(method, level, seed, point)
        if name in names:  # two values written the same way in a name ("a/b" and "a_b")
            problems.append(f"--grid: {dict(names[name])} and {dict(point)} would both be run {name}; give "
                            "values that differ in letters or digits")
            continue
        names[name] = point
        data["pruner"]["method"] = method
        data["pruner"]["remaining_pct"] = level
        data.update(seed=seed, name=name, output_dir=str(sweep_dir))
        try:
            plan.append(SweepRun(method, level, seed, validate_recipe(data, source), point))
        except RecipeError as e:
            per_combo[name] = e.problems
    if per_combo:
        problems += _merge_problems(per_combo)
    if problems:
        raise RecipeError(source, _unique(problems))
    _check_inputs_once(plan, source)
    return plan


def _set_values(data: dict, point: Sequence[tuple[str, Any]]) -> str | None:
    """Set each ``(dotted key, value)`` into ``data``; a problem when a key runs through a value."""
    for key, value in point:
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                return f"--grid {key}: '{'.'.join(parts[: i + 1])}' is not a section"
            node = node[part]
        node[parts[-1]] = copy.deepcopy(value)
    return None


def _grid_keys_every_method_takes(keys: Sequence[str], methods: list[str]) -> list[str]:
    """A ``--grid`` pruner key must be a key of every swept method that prunes (a method without it,
    or dense fine-tuning, which reads no pruner key, would run the same experiment under several names)."""
    from movprune import pruners

    problems = []
    for key in keys:
        section, _, name = key.partition(".")
        if section != "pruner":
            continue
        lacking = [m for m in methods if m not in pruners.methods_taking(name)
                   or not pruners.pruner_class(m).MASKS_WEIGHTS]
        if lacking:
            problems.append(f"--grid {key}: method(s) {', '.join(lacking)} have no key {name}; sweep it with "
                            f"--pruners {','.join(m for m in methods if m not in lacking) or '<a method that has it>'}")
    return problems


def _registered_methods() -> list[str]:
    from movprune import pruners

    return pruners.method_names()


def _keys_no_method_takes(pruner: object, methods: list[str]) -> list[str]:
    """One problem per pruner key that is set and that no method of the sweep has (a key of no
    method at all is left to validation, which suggests the key meant)."""
    from movprune import pruners

    if not isinstance(pruner, dict) or not methods:
        return []
    problems = []
    for key, value in pruner.items():
        takers = pruners.methods_taking(str(key))
        if value is not None and takers and not set(takers) & set(methods):
            problems.append(f"pruner.{key}: none of the swept methods ({', '.join(methods)}) has this key; "
                            f"it is a key of {', '.join(takers)} (remove it or set pruner.{key}=null, or add one "
                            "of those to --pruners)")
    return problems


def _drop_method_keys(pruner: dict) -> None:
    """Leave out the keys that only some methods have (the file set them for its own method)."""
    from movprune.pruners.config import METHOD_SPECIFIC_KEYS

    for key in METHOD_SPECIFIC_KEYS & set(pruner):
        del pruner[key]


def _drop_keys_of_other_methods(pruner: dict, method: str) -> None:
    """Leave out of one run's ``pruner:`` section the keys its method does not have but another of
    the sweep's methods does (the others were reported by :func:`_keys_no_method_takes`)."""
    from movprune import pruners

    for key in list(pruner):
        takers = pruners.methods_taking(str(key))
        if takers and method not in takers:
            del pruner[key]


def _merge_problems(per_combo: dict[str, list[str]]) -> list[str]:
    """A problem every combination has is reported once; others name their runs."""
    everyone = set.intersection(*(set(p) for p in per_combo.values())) if per_combo else set()
    merged = [p for p in next(iter(per_combo.values())) if p in everyone]
    by_problem: dict[str, list[str]] = {}
    for name, probs in per_combo.items():
        for p in probs:
            if p not in everyone:
                by_problem.setdefault(p, []).append(name)
    merged += [f"{p} (runs {', '.join(names)})" for p, names in by_problem.items()]
    return merged


def _check_inputs_once(plan: list[SweepRun], source: str) -> None:
    """Data files, model and the pruner's files (a latency table) of every distinct setting, before
    anything trains; a finished run, which the sweep skips, is not checked for its pruner's files."""
    from movprune.training import check_inputs

    seen = set()
    for run in plan:
        r = run.recipe
        finished = results.is_finished(r.run_dir)
        key = (r.task, None if r.dataset is None else r.dataset.model_dump_json(), r.data_dir,
               r.train_split, r.eval_split, r.model,
               None if r.distill is None else r.distill.model_dump_json(), r.pruner.model_dump_json(), finished)
        if key not in seen:
            seen.add(key)
            check_inputs(r, source, resume=True)
