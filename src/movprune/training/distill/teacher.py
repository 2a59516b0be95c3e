"""Resolving a given ``distill.teacher``: a finished run folder, a model folder or a Hub id."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from movprune import results
from movprune.errors import ModelError, RunFailedError
from movprune.models import ALIASES, check_no_custom_code, resolve_model
from movprune.recipe import Recipe

#: The ``distill.teacher`` value that trains (or reuses) the dense teacher automatically.
AUTO = "auto"

TeacherKind = Literal["auto", "run", "model", "hub"]


@dataclass
class TeacherSource:
    """A resolved teacher: what the recipe said, where the weights are, and metrics if known."""

    spec: str
    kind: TeacherKind
    #: A run folder (run, auto), a model folder (model) or a Hub id (hub).
    location: str
    #: The folder or Hub id ``from_pretrained`` loads.
    model_path: str
    metrics: dict[str, float] | None = None


def problem(spec: str, text: str) -> ModelError:
    """The one-line error for a bad ``distill.teacher`` value."""
    return ModelError(f"distill.teacher '{spec}': {text}")


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return (len(parts) <= 2 and all(parts) and not spec.startswith((".", "~"))
            and all(c.isalnum() or c in "-_." for p in parts for c in p))


def from_run_folder(spec: str, run_dir: Path, task_name: str, kind: TeacherKind) -> TeacherSource:
    """A finished run folder as a teacher: its model, task and metrics, checked."""
    if not (run_dir / results.RESULT_FILE).is_file():
        raise problem(spec, f"the run folder has no {results.RESULT_FILE} (the run is unfinished or was "
                             "interrupted); point at a finished run, or use teacher: auto")
    try:
        result = results.load_result(run_dir)
    except RunFailedError as e:
        raise problem(spec, f"not a usable finished run ({e})") from None
    if result.task != task_name:
        raise problem(spec, f"the teacher was trained on task '{result.task}', the recipe's task "
                             f"is '{task_name}'; use a teacher fine-tuned on {task_name}")
    model_dir = run_dir / results.MODEL_DIR
    if not (model_dir / "config.json").is_file():
        raise problem(spec, f"the run folder has no {results.MODEL_DIR}/config.json (its model was "
                             "not saved); rerun the teacher or point at another run")
    return TeacherSource(spec, kind, str(run_dir.resolve()), str(model_dir.resolve()), dict(result.metrics))


def check_teacher(recipe: Recipe) -> None:
    """Cheap checks of ``recipe.distill.teacher`` before any training (``auto`` always passes).

    Raises :class:`ModelError` with one line naming the value and the fix.
    """
    if recipe.distill is None or recipe.distill.teacher == AUTO:
        return
    resolve_given_teacher(recipe)


def resolve_given_teacher(recipe: Recipe) -> TeacherSource:
    """Resolve a teacher that is a run folder, a model folder or a Hub id (not ``auto``)."""
    spec = recipe.distill.teacher.strip()
    if not spec:
        raise problem(spec, "empty; give a run folder, a model folder, a Hub id, or auto")
    if spec in ALIASES:
        raise problem(spec, f"a built-in base model, not a teacher fine-tuned on {recipe.task}; use "
                             "teacher: auto to fine-tune it first")
    local = Path(spec).expanduser()
    if local.is_dir():
        is_run = any((local / f).exists() for f in (results.RESULT_FILE, results.RECIPE_FILE,
                                                   results.METRICS_FILE, results.MODEL_DIR))
        if is_run:
            return from_run_folder(spec, local, recipe.task, "run")
        if (local / "config.json").is_file():
            check_no_custom_code(local, f"distill.teacher '{spec}'")
            return TeacherSource(spec, "model", str(local.resolve()), str(local.resolve()))
        raise problem(spec, "the folder is neither a movprune run folder (no result.json, model/) nor "
                             "a model folder (no config.json)")
    if local.exists():
        raise problem(spec, "not a folder; give a run folder, a model folder, a Hub id, or auto")
    if not _looks_like_hub_id(spec):
        raise problem(spec, "folder not found (give a finished run folder, a model folder with "
                             "config.json, a Hugging Face Hub id, or auto)")
    try:
        resolve_model(spec)
    except ModelError:
        raise problem(spec, "no such folder, and not loadable from the Hugging Face Hub; check the "
                             "path (a run folder, or a model folder with config.json)") from None
    return TeacherSource(spec, "hub", spec, spec)
