"""The automatic teacher: derived from the recipe, trained once, cached under a lock.

Its cache entry is ``<movprune cache>/teachers/<task>-<hash>/``, a finished run folder, keyed by
everything that determines the teacher (:func:`teacher_key`). Concurrent runs needing the
same teacher train it once: they wait on one lock, and training writes into a temporary folder
that is renamed into place when finished.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from movprune import identity, results
from movprune.io import publish_dir
from movprune.recipe import Recipe
from movprune.run_folder import is_movprune_run
from movprune.training.distill.teacher import AUTO, TeacherSource, from_run_folder

#: Bump when the way an automatic teacher is derived from a recipe, or its cache key, changes
#: (invalidates the cache). 2: keyed on the keys that change the numbers only (movprune.identity).
TEACHER_RECIPE_VERSION = 2


def teacher_recipe(recipe: Recipe) -> Recipe:
    """The dense run that gives ``recipe``'s automatic teacher: same task, model, data, training
    settings and seed, no pruning, no distillation."""
    from movprune import pruners

    return recipe.model_copy(update={"pruner": pruners.pruner_config(method="none"),
                                     "distill": None, "data_dir": _absolute(recipe.data_dir)})


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def _model_fingerprint(spec: str) -> dict[str, Any]:
    local = Path(spec).expanduser()
    if not local.is_dir():
        return {"spec": spec}  # a built-in alias or a Hub id
    files = {}
    for f in sorted(local.iterdir()):
        if f.is_file():
            st = f.stat()
            files[f.name] = [st.st_size, st.st_mtime_ns]
    return {"folder": str(local.resolve()), "files": files}


def teacher_key_parts(recipe: Recipe) -> dict[str, Any]:
    """What determines the automatic teacher of ``recipe`` beyond its dense recipe's settings (the
    model's and the data's fingerprints, the evaluation splits): the cache key's extra, unhashed."""
    from movprune import tasks
    from movprune.tasks.base import PREPROCESSING_VERSION

    task = tasks.get_task(recipe.task, recipe.dataset)
    data_dir = _absolute(recipe.data_dir)
    eval_splits = [s for s, _ in task.evaluation_splits(recipe.eval_split)]
    return {
        "teacher_recipe_version": TEACHER_RECIPE_VERSION, "preprocessing_version": PREPROCESSING_VERSION,
        "model": _model_fingerprint(recipe.model), "eval_splits": eval_splits,
        "data": {s: task.data_fingerprint(data_dir, s) for s in [recipe.train_split, *eval_splits]},
    }


def teacher_key(recipe: Recipe) -> str:
    """A readable, unique name for ``recipe``'s automatic teacher: ``<task>-<hash>``, the hash of its
    dense recipe's keys that change the numbers (:func:`movprune.identity.experiment_key`: output and
    operational keys such as ``train.eval_every_steps`` leave it alone) and :func:`teacher_key_parts`."""
    digest = identity.experiment_key(teacher_recipe(recipe), extra=teacher_key_parts(recipe))
    return f"{recipe.task}-{digest[:20]}"


def teachers_dir() -> Path:
    """``<movprune cache>/teachers``."""
    from movprune.tasks.base import cache_root

    return cache_root() / "teachers"


@contextlib.contextmanager
def _exclusive(lock_path: Path, enabled: bool) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (POSIX ``flock``) so that concurrent runs needing
    the same teacher train it once; where locks are unavailable, the atomic rename still keeps
    the cache consistent (the last rename wins)."""
    if not enabled:
        yield
        return
    try:
        import fcntl
    except ImportError:
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def auto_teacher(recipe: Recipe, train: Callable[[Recipe], Any],
                 on_phase: Callable[[str], None] = lambda text: None) -> TeacherSource:
    """The cached automatic teacher of ``recipe``; trains it with ``train(dense_recipe)`` if absent.

    Training writes into a temporary folder beside the cache entry and renames it into place when
    finished, so the cache never holds a half-trained teacher.
    """
    from accelerate import PartialState

    key = teacher_key(recipe)
    root = teachers_dir()
    final = root / key
    if not results.is_finished(final):
        state = PartialState()
        distributed = state.num_processes > 1
        with _exclusive(root / f"{key}.lock", enabled=state.is_main_process):
            state.wait_for_everyone()
            if not results.is_finished(final):
                # Every rank must write the same run folder: its name cannot be random then.
                token = "shared" if distributed else f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
                partial_root = root / f".partial-{key}-{token}"
                if state.is_main_process and not distributed:
                    for stale in root.glob(f".partial-{key}-*"):  # left by crashed runs; we hold the lock
                        shutil.rmtree(stale, ignore_errors=True)
                dense = teacher_recipe(recipe).model_copy(update={"name": key, "output_dir": str(partial_root)})
                on_phase(f"training the dense teacher (distill.teacher: auto) → {final}")
                try:
                    train(dense)
                    state.wait_for_everyone()
                    if state.is_main_process:
                        _publish(partial_root / key, final)
                finally:
                    state.wait_for_everyone()
                    if state.is_main_process:
                        shutil.rmtree(partial_root, ignore_errors=True)
    source = from_run_folder(AUTO, final, recipe.task, "auto")
    return source


def _publish(trained: Path, final: Path) -> None:
    """Publish a finished teacher run into the cache (flushed, then one rename); when another
    process got there first, keep theirs. Only an unfinished run movprune left there is replaced."""
    if results.is_finished(final):
        return
    publish_dir(trained, final, replace=is_movprune_run(final))
