"""Sweeps: one recipe, run for every combination of pruning method, remaining-weights level and seed.

Runs go to ``<output_dir>/<sweep name>/<method>-r<remaining %>-s<seed>/`` where the sweep name is
the recipe's ``name`` (or, when it has none, the recipe file's stem). A sweep is resumable: a run
whose folder already holds a finished result is skipped without being touched, an unfinished one
continues from its newest checkpoint (``train.save_every_steps``, or the one SIGTERM saved), or is
redone from scratch when it has none. Every combination is validated before the first run starts. By
default runs execute in-process, one after another, so whatever the runs share (the tokenisation
cache, a distillation teacher cache, loaded libraries) is built once; a backend
(``experiments/backends.py``: worker processes, Ray tasks) runs them elsewhere under the same rules.
"""

from __future__ import annotations

import copy
import gc
import json
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from movprune import results
from movprune.errors import MovpruneError, RecipeError, ResultExistsError, RunInterrupted, RunLockedError
from movprune.io import atomic_write_text
from movprune.recipe import Recipe, _parse_override, apply_overrides, read_recipe_data, validate_recipe
from movprune.results import RunResult
from movprune.run_folder import check_run_name, is_movprune_run
from movprune.suggest import did_you_mean

#: Written into an unfinished run folder when its run raised (the folder stays unfinished).
ERROR_FILE = "error.txt"

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

    @property
    def name(self) -> str:
        """The run folder's name inside the sweep folder."""
        return self.recipe.run_name

    @property
    def run_dir(self) -> Path:
        """Where the run writes its files."""
        return self.recipe.run_dir


@dataclass
class RunOutcome:
    """What happened to one run of a sweep."""

    run: SweepRun
    status: Literal["finished", "skipped", "failed", "locked"]
    result: RunResult | None = None
    error: str | None = None
    seconds: float = 0.0


class SweepObserver(Protocol):
    """Receives a sweep's progress (the CLI draws it; the library never prints)."""

    def on_run_start(self, index: int, total: int, run: SweepRun):
        """Called before a run trains; may return a training-loop observer for that run."""

    def on_run_end(self, index: int, total: int, outcome: RunOutcome) -> None:
        """Called after a run finished, failed, was skipped, or was locked by another process."""


# --------------------------------------------------------------------------------------------
# Parsing the command line's lists


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _unique(values: list) -> list:
    return list(dict.fromkeys(values))


def parse_remaining_pcts(text: str) -> list[float]:
    """``"3,10,15"`` -> ``[3.0, 10.0, 15.0]``: % of encoder weights kept, each in (0, 100]."""
    values, problems = [], []
    for part in _split(text):
        try:
            value = float(part.rstrip("%"))
        except ValueError:
            problems.append(f"'{part}' is not a number (give remaining weights in %, e.g. 3,10,15)")
            continue
        if not 0 < value <= 100:
            problems.append(f"{part}: remaining weights must be in (0, 100] % (3 means keep 3%, i.e. "
                            "97% sparse)")
            continue
        values.append(value)
    if not values and not problems:
        problems.append("no value given (e.g. --sparsity 3,10,15 for 3%, 10% and 15% remaining)")
    if problems:
        raise RecipeError("--sparsity", problems)
    return _unique(values)


def parse_seeds(text: str) -> list[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]``."""
    values, problems = [], []
    for part in _split(text):
        try:
            values.append(int(part))
        except ValueError:
            problems.append(f"'{part}' is not an integer seed")
    if not values and not problems:
        problems.append("no seed given (e.g. --seeds 1,2,3)")
    if problems:
        raise RecipeError("--seeds", problems)
    return _unique(values)


def parse_axes(remaining_pcts: str | None, methods: str | None,
               seeds: str | None) -> tuple[list[float] | None, list[str] | None, list[int] | None]:
    """Parse the three comma-separated axes (``None`` = the recipe's value), reporting every
    problem of all three at once as one :class:`MovpruneError`."""
    parsed, problems = [], []
    for text, parse in ((remaining_pcts, parse_remaining_pcts), (methods, parse_methods),
                        (seeds, parse_seeds)):
        try:
            parsed.append(parse(text) if text is not None else None)
        except RecipeError as e:
            problems.append(str(e))
            parsed.append(None)
    if problems:
        raise MovpruneError("\n".join(problems))
    return parsed[0], parsed[1], parsed[2]


def parse_methods(text: str) -> list[str]:
    """``"magnitude,movement"`` -> ``["magnitude", "movement"]`` (checked against the registry
    when the sweep is planned)."""
    values = _unique(_split(text))
    if not values:
        raise RecipeError("--pruners", ["no pruning method given (e.g. --pruners magnitude,movement)"])
    return values


# --------------------------------------------------------------------------------------------
# Planning


def format_level(remaining_pct: float) -> str:
    """``10.0`` -> ``"10"``, ``0.5`` -> ``"0.5"`` (for names and labels)."""
    return f"{remaining_pct:g}"


def run_name(method: str, remaining_pct: float | None, seed: int) -> str:
    """``movement-r10-s1`` (10% remaining, seed 1); ``<method>-s1`` for a method without a level."""
    level = "" if remaining_pct is None else f"-r{format_level(remaining_pct)}"
    return f"{method}{level}-s{seed}"


def _method_levels(method: str, levels: list[float] | None) -> tuple[list[float | None], str | None]:
    """The levels a method runs at, and a problem when it cannot.

    A method that takes a target (magnitude, movement) runs once per level; one that refuses any
    target (dense fine-tuning) runs once, at the level it reports itself (100% for dense).
    """
    from movprune import pruners
    from movprune.recipe import PrunerConfig

    if method not in pruners.method_names():
        return [], None  # reported by validation, with a 'did you mean'
    cls = pruners.pruner_class(method)
    takes_target = not cls.check(PrunerConfig(method=method, remaining_pct=50.0))
    if takes_target:
        if levels is None:
            return [], (f"method '{method}' needs remaining-weight levels: pass --sparsity (e.g. "
                        "--sparsity 3,10 for 3% and 10% remaining) or set pruner.remaining_pct in the recipe")
        return list(levels), None
    own = cls(PrunerConfig(method=method), 1).target_remaining_pct
    return [own], None


def plan_sweep(recipe_path: str | Path, *, remaining_pcts: Sequence[float] | None = None,
               methods: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
               overrides: Sequence[str] = ()) -> list[SweepRun]:
    """Every run of the sweep, validated, in the order they run (seed, then level, then method).

    ``None`` for an axis takes the recipe's own value. ``key=value`` overrides apply to every run.
    Method-specific pruner keys written in the recipe file (e.g. ``scores_lr``) apply only to the
    recipe's own method; other methods take their defaults unless an override sets the key.
    Raises :class:`RecipeError` listing every problem of every combination at once.
    """
    source = str(recipe_path)
    base = read_recipe_data(recipe_path)
    problems: list[str] = []
    for text in overrides:
        try:
            path, _ = _parse_override(text)
        except ValueError:
            continue  # apply_overrides reports it below
        option = _SWEPT_KEYS.get(".".join(path))
        if option:
            problems.append(f"override '{text}': the sweep sets {'.'.join(path)} itself; use {option}")
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
    method_specific = _method_specific_keys()

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
    for seed, level, method in combos:
        data = copy.deepcopy(base)
        pruner = data.get("pruner")
        if isinstance(pruner, dict) and method != file_method:
            for key in method_specific:
                pruner.pop(key, None)
        apply_overrides(data, list(overrides))
        if not isinstance(data.get("pruner"), dict):
            data["pruner"] = {}
        name = run_name(method, level, seed)
        data["pruner"]["method"] = method
        data["pruner"]["remaining_pct"] = level
        data.update(seed=seed, name=name, output_dir=str(sweep_dir))
        try:
            plan.append(SweepRun(method, level, seed, validate_recipe(data, source)))
        except RecipeError as e:
            per_combo[name] = e.problems
    if per_combo:
        problems += _merge_problems(per_combo)
    if problems:
        raise RecipeError(source, _unique(problems))
    _check_inputs_once(plan, source)
    return plan


def _registered_methods() -> list[str]:
    from movprune import pruners

    return pruners.method_names()


def _method_specific_keys() -> set[str]:
    """Pruner keys that only some methods use (those with a per-method default)."""
    from movprune import pruners

    return {key for m in pruners.method_names() for key in pruners.pruner_class(m).DEFAULTS}


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
    """Data files and model of every distinct setting, before anything trains."""
    from movprune.experiments.train import check_inputs

    seen = set()
    for run in plan:
        r = run.recipe
        key = (r.task, None if r.dataset is None else r.dataset.model_dump_json(), r.data_dir,
               r.train_split, r.eval_split, r.model,
               None if r.distill is None else r.distill.model_dump_json())
        if key not in seen:
            seen.add(key)
            check_inputs(r, source)


# --------------------------------------------------------------------------------------------
# Running


def pending(plan: list[SweepRun], force: bool = False) -> list[SweepRun]:
    """The runs that would train (all with ``force``, else those without a finished result)."""
    return [r for r in plan if force or not results.is_finished(r.run_dir)]


#: Recipe keys that differ between runs of one sweep by construction.
_OWN_KEYS = ("name", "output_dir")


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return flat


def recipe_differences(run: SweepRun) -> list[str] | None:
    """How the recipe a finished run was trained with differs from the one the sweep asks for
    (``name``/``output_dir`` aside): one ``key: was -> asked`` per key; None when the run is not
    finished. A ``recipe.yaml`` that cannot be read counts as a difference."""
    if not results.is_finished(run.run_dir):
        return None
    path = run.run_dir / results.RECIPE_FILE
    try:
        saved = validate_recipe(read_recipe_data(path), str(path)).model_dump(mode="json")
    except MovpruneError:
        return [f"{results.RECIPE_FILE}: missing or not a valid recipe"]
    asked = _flat(run.recipe.model_dump(mode="json"))
    saved = _flat(saved)
    return [f"{key}: {json.dumps(saved.get(key))} -> {json.dumps(asked.get(key))}"
            for key in sorted(set(asked) | set(saved))
            if key.split(".")[0] not in _OWN_KEYS and saved.get(key) != asked.get(key)]


def check_finished_recipes(plan: list[SweepRun], source: str) -> None:
    """Refuse to skip a finished run trained with another recipe than the one asked: it would be
    reported as this sweep's result. Raises :class:`RecipeError` naming the runs and keys."""
    problems = []
    for run in plan:
        differences = recipe_differences(run)
        if differences:
            problems.append(f"{run.run_dir} finished with another recipe ({'; '.join(differences)}); "
                            "pass --force to re-run it with this one, or set name=<other sweep name> to "
                            "sweep into another folder")
    if problems:
        raise RecipeError(source, problems)


def run_one(sweep_run: SweepRun, force: bool = False, observer: Any = None) -> RunOutcome:
    """Train one run of a sweep; never raises for the run's own failure.

    A run another process is writing (its lock is held) comes back ``locked``; one another sweep
    finished meanwhile, ``skipped``; a run that raises, ``failed``, its traceback in ``error.txt`` in
    its unfinished folder. An unfinished run resumes from its newest checkpoint; SIGTERM / Ctrl-C
    save it and stop the sweep (:class:`RunInterrupted` propagates). The same rules hold on every
    backend: this is what a worker process or a Ray task runs.
    """
    from movprune.experiments.train import run as train_run

    start = time.perf_counter()
    if not force and is_movprune_run(sweep_run.run_dir):  # a resumed run may succeed this time
        (sweep_run.run_dir / ERROR_FILE).unlink(missing_ok=True)
    try:
        result = train_run(sweep_run.recipe, force=force, resume=not force, observer=observer)
        return RunOutcome(sweep_run, "finished", result=result, seconds=time.perf_counter() - start)
    except RunInterrupted:
        raise
    except RunLockedError as e:  # another sweep is running it
        return RunOutcome(sweep_run, "locked", error=str(e))
    except ResultExistsError as e:  # another sweep finished it since the check above
        if results.is_finished(sweep_run.run_dir):
            return RunOutcome(sweep_run, "skipped", result=results.load_result(sweep_run.run_dir))
        return RunOutcome(sweep_run, "failed", error=str(e))
    except Exception as e:  # one failing run must not stop the others
        message = str(e) if isinstance(e, MovpruneError) else f"{type(e).__name__}: {e}"
        if (sweep_run.run_dir.is_dir() and not results.is_finished(sweep_run.run_dir)
                and is_movprune_run(sweep_run.run_dir)):
            atomic_write_text(sweep_run.run_dir / ERROR_FILE, traceback.format_exc())
        return RunOutcome(sweep_run, "failed", error=message, seconds=time.perf_counter() - start)
    finally:
        gc.collect()  # the finished model is garbage; free it before the next one loads


class SweepBackend(Protocol):
    """Runs the pending runs of a sweep somewhere else (worker processes, a Ray cluster)."""

    def run_all(self, runs: list[tuple[int, SweepRun]], force: bool) -> Iterator[tuple[int, RunOutcome]]:
        """Start every ``(index, run)`` and yield ``(index, outcome)`` as each one ends."""
        ...


def run_sweep(plan: list[SweepRun], *, force: bool = False,
              observer: SweepObserver | None = None, backend: SweepBackend | None = None) -> list[RunOutcome]:
    """Run every combination of ``plan``; returns one outcome per run, in plan order.

    Finished runs are skipped untouched (unless ``force``), after checking they were trained with
    the recipe asked (:func:`check_finished_recipes`); the other runs follow :func:`run_one`'s rules
    (locked, failed) and the sweep goes on. With ``force`` a finished run is replaced only once its
    new run has finished. Without a ``backend`` the runs train in this process one after another;
    with one, they run where the backend puts them and the observer hears of each as it ends.
    Ctrl-C stops the sweep, leaving the current runs unfinished (a forced one leaves the old result
    in place).
    """
    if not force and plan:
        check_finished_recipes(plan, "sweep")
    total = len(plan)
    outcomes: dict[int, RunOutcome] = {}
    todo: list[tuple[int, SweepRun]] = []
    for index, sweep_run in enumerate(plan):
        if not force and results.is_finished(sweep_run.run_dir):
            outcomes[index] = RunOutcome(sweep_run, "skipped", result=results.load_result(sweep_run.run_dir))
            if observer:
                observer.on_run_end(index, total, outcomes[index])
        else:
            todo.append((index, sweep_run))
    if backend is None:
        for index, sweep_run in todo:
            run_observer = observer.on_run_start(index, total, sweep_run) if observer else None
            outcomes[index] = run_one(sweep_run, force, run_observer)
            if observer:
                observer.on_run_end(index, total, outcomes[index])
    else:
        for index, outcome in backend.run_all(todo, force):
            outcomes[index] = outcome
            if observer:
                observer.on_run_end(index, total, outcome)
    return [outcomes[i] for i in range(total)]
