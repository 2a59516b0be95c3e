"""Distillation from a dense teacher (the paper's Table 3): where the teacher comes from, and the loss.

A recipe's ``distill.teacher`` is one of

* ``auto``: the dense model fine-tuned on the same task, model, data and training settings
  (``pruner.method: none``). It is trained once and cached under
  ``<movprune cache>/teachers/<key>/`` (a finished run folder), keyed by everything that
  determines it, so a second run or a whole sweep reuses it;
* a finished movprune run folder (its ``model/`` is the teacher, its ``result.json`` gives the
  teacher's metrics and task);
* a model folder written by ``save_pretrained``;
* a Hugging Face Hub id.

The loss follows the reference implementation of Sanh et al. (2020)::

    loss = alpha_ce * task_loss + alpha_distil * KL(p_teacher || p_student) * T^2,
    p = softmax(logits / T)

i.e. ``kl_div(log_softmax(z_s / T), softmax(z_t / T), reduction="batchmean") * T^2``: the KL
divergence is summed over the classes (or token positions) of a row and averaged over the rows of
the batch; for several logit tensors (SQuAD's start and end logits) the terms are averaged. For a
regression head the distillation term is the mean-squared error to the teacher's output.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F

from movprune.errors import ModelError, RunFailedError
from movprune import results
from movprune.io import publish_dir
from movprune.run_folder import is_movprune_run
from movprune.models import ALIASES, ResolvedModel, resolve_model
from movprune.recipe import PrunerConfig, Recipe

if TYPE_CHECKING:
    from movprune.tasks.base import Task

#: The ``distill.teacher`` value that trains (or reuses) the dense teacher automatically.
AUTO = "auto"
#: Bump when the way an automatic teacher is derived from a recipe changes (invalidates the cache).
TEACHER_RECIPE_VERSION = 1
#: Training settings that do not change the teacher's weights or its metrics (not in the cache key).
_KEY_IGNORED_TRAIN_KEYS = ("log_every_steps", "eval_every_steps")

TeacherKind = Literal["auto", "run", "model", "hub"]


# ------------------------------------------------------------------------------------------------
# The loss


def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                  temperature: float) -> torch.Tensor:
    """``KL(softmax(z_t/T) || softmax(z_s/T)) * T^2``, summed over the last dim, averaged over rows.

    Positions where the teacher's probability is exactly zero (a head that fills padding with
    ``-inf``) contribute nothing, even where the student's logit is ``-inf`` too. BERT-family
    question-answering heads give padded positions finite logits; those are compared like any
    other position, as in the reference implementation.
    """
    s = student_logits.float() / temperature
    t = teacher_logits.float() / temperature
    log_p_s = F.log_softmax(s, dim=-1)
    log_p_t = F.log_softmax(t, dim=-1)
    p_t = log_p_t.exp()
    pointwise = torch.where(p_t > 0, p_t * (log_p_t - log_p_s), torch.zeros_like(p_t))
    rows = pointwise.reshape(-1, pointwise.shape[-1]).sum(-1)
    return rows.mean() * temperature ** 2


def distillation_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                      temperature: float, regression: bool) -> torch.Tensor:
    """The distillation term for a task's logits tensors (one for GLUE, start and end for SQuAD).

    Classification: :func:`kl_divergence` averaged over the tensors. Regression: the mean-squared
    error between the student's and the teacher's outputs (the temperature does not apply).
    """
    if len(student) != len(teacher) or not student:
        raise ValueError(f"student gives {len(student)} logits tensors, teacher {len(teacher)}")
    terms = []
    for s, t in zip(student, teacher):
        if s.shape != t.shape:
            raise ValueError(f"student logits {tuple(s.shape)} and teacher logits {tuple(t.shape)} differ")
        terms.append(F.mse_loss(s.float(), t.float()) if regression else kl_divergence(s, t, temperature))
    return torch.stack(terms).mean()


class Distiller:
    """The loaded teacher and the loss weights; combines the task loss with the distillation term."""

    def __init__(self, teacher: torch.nn.Module, source: "TeacherSource", recipe: Recipe, task: "Task",
                 autocast: Callable[[], Any]):
        self.teacher = teacher
        self.source = source
        self.config = recipe.distill
        self.task = task
        self.autocast = autocast
        #: The teacher's own evaluation metrics (None until known; see :meth:`needs_metrics`).
        self.teacher_metrics: dict[str, float] | None = source.metrics

    def combine(self, batch: dict[str, torch.Tensor], student_outputs: Any,
                task_loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(``alpha_ce * task_loss + alpha_distil * distillation term``, the distillation term).

        The teacher sees the same batch in eval mode, without gradients.
        """
        self.teacher.eval()
        with torch.no_grad(), self.autocast():
            teacher_outputs = self.teacher(**batch)
        term = distillation_loss(self.task.outputs_for_distillation(student_outputs),
                                 self.task.outputs_for_distillation(teacher_outputs),
                                 self.config.temperature, self.task.is_regression)
        return self.config.alpha_ce * task_loss + self.config.alpha_distil * term, term.detach()

    def result_entry(self) -> dict[str, Any]:
        """The ``distill`` block of ``result.json``."""
        return {"teacher": self.source.location, "teacher_kind": self.source.kind,
                "teacher_spec": self.source.spec, "teacher_metrics": self.teacher_metrics,
                "alpha_ce": self.config.alpha_ce, "alpha_distil": self.config.alpha_distil,
                "temperature": self.config.temperature}


# ------------------------------------------------------------------------------------------------
# Where the teacher comes from


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


def _problem(spec: str, text: str) -> ModelError:
    return ModelError(f"distill.teacher '{spec}': {text}")


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return (len(parts) <= 2 and all(parts) and not spec.startswith((".", "~"))
            and all(c.isalnum() or c in "-_." for p in parts for c in p))


def _from_run_folder(spec: str, run_dir: Path, task_name: str, kind: TeacherKind) -> TeacherSource:
    if not (run_dir / results.RESULT_FILE).is_file():
        raise _problem(spec, f"the run folder has no {results.RESULT_FILE} (the run is unfinished or was "
                             "interrupted); point at a finished run, or use teacher: auto")
    try:
        result = results.load_result(run_dir)
    except RunFailedError as e:
        raise _problem(spec, f"not a usable finished run ({e})") from None
    if result.task != task_name:
        raise _problem(spec, f"the teacher was trained on task '{result.task}', the recipe's task "
                             f"is '{task_name}'; use a teacher fine-tuned on {task_name}")
    model_dir = run_dir / results.MODEL_DIR
    if not (model_dir / "config.json").is_file():
        raise _problem(spec, f"the run folder has no {results.MODEL_DIR}/config.json (its model was "
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
        raise _problem(spec, "empty; give a run folder, a model folder, a Hub id, or auto")
    if spec in ALIASES:
        raise _problem(spec, f"a built-in base model, not a teacher fine-tuned on {recipe.task}; use "
                             "teacher: auto to fine-tune it first")
    local = Path(spec).expanduser()
    if local.is_dir():
        is_run = any((local / f).exists() for f in (results.RESULT_FILE, results.RECIPE_FILE,
                                                   results.METRICS_FILE, results.MODEL_DIR))
        if is_run:
            return _from_run_folder(spec, local, recipe.task, "run")
        if (local / "config.json").is_file():
            return TeacherSource(spec, "model", str(local.resolve()), str(local.resolve()))
        raise _problem(spec, "the folder is neither a movprune run folder (no result.json, model/) nor "
                             "a model folder (no config.json)")
    if local.exists():
        raise _problem(spec, "not a folder; give a run folder, a model folder, a Hub id, or auto")
    if not _looks_like_hub_id(spec):
        raise _problem(spec, "folder not found (give a finished run folder, a model folder with "
                             "config.json, a Hugging Face Hub id, or auto)")
    try:
        resolve_model(spec)
    except ModelError:
        raise _problem(spec, "no such folder, and not loadable from the Hugging Face Hub; check the "
                             "path (a run folder, or a model folder with config.json)") from None
    return TeacherSource(spec, "hub", spec, spec)


# ------------------------------------------------------------------------------------------------
# The automatic teacher and its cache


def teacher_recipe(recipe: Recipe) -> Recipe:
    """The dense run that gives ``recipe``'s automatic teacher: same task, model, data, training
    settings and seed, no pruning, no distillation."""
    from movprune import pruners

    return recipe.model_copy(update={"pruner": pruners.resolve_defaults(PrunerConfig(method="none")),
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
    """Everything that determines the automatic teacher of ``recipe`` (its cache key, unhashed)."""
    from movprune import tasks
    from movprune.tasks.base import PREPROCESSING_VERSION

    task = tasks.get_task(recipe.task, recipe.dataset)
    data_dir = _absolute(recipe.data_dir)
    eval_splits = [recipe.eval_split] if recipe.eval_split else [s for s, _ in task.default_eval_splits()]
    train = recipe.train.model_dump(mode="json")
    for k in _KEY_IGNORED_TRAIN_KEYS:
        train.pop(k, None)
    return {
        "teacher_recipe_version": TEACHER_RECIPE_VERSION, "preprocessing_version": PREPROCESSING_VERSION,
        "task": recipe.task, "model": _model_fingerprint(recipe.model), "data_dir": data_dir,
        "train_split": recipe.train_split, "eval_splits": eval_splits,
        "data": {s: task.data_fingerprint(data_dir, s) for s in [recipe.train_split, *eval_splits]},
        "train": train, "seed": recipe.seed,
    }


def teacher_key(recipe: Recipe) -> str:
    """A readable, unique name for ``recipe``'s automatic teacher: ``<task>-<hash>``."""
    digest = hashlib.sha256(json.dumps(teacher_key_parts(recipe), sort_keys=True).encode()).hexdigest()
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
    source = _from_run_folder(AUTO, final, recipe.task, "auto")
    return source


def _publish(trained: Path, final: Path) -> None:
    """Publish a finished teacher run into the cache (flushed, then one rename); when another
    process got there first, keep theirs. Only an unfinished run movprune left there is replaced."""
    if results.is_finished(final):
        return
    publish_dir(trained, final, replace=is_movprune_run(final))


def prepare_teacher(recipe: Recipe, train: Callable[[Recipe], Any],
                    on_phase: Callable[[str], None] = lambda text: None) -> TeacherSource:
    """Resolve ``recipe.distill.teacher``, training the automatic teacher first when needed."""
    if recipe.distill.teacher == AUTO:
        return auto_teacher(recipe, train, on_phase)
    return resolve_given_teacher(recipe)


def _head_kind(model: torch.nn.Module) -> str:
    """``ForSequenceClassification``, ``ForQuestionAnswering``, ...: what a head does, for any backbone."""
    name = type(model).__name__
    return name[name.find("For"):] if "For" in name else name


def load_teacher(source: TeacherSource, recipe: Recipe, task: "Task", student: torch.nn.Module,
                 device: torch.device, autocast: Callable[[], Any]) -> Distiller:
    """Load the teacher with the task's head on ``device`` and check it fits the student.

    Raises :class:`ModelError` when the teacher's head differs from the student's (another kind
    of head, another number of labels, or another vocabulary).
    """
    spec = recipe.distill.teacher
    teacher_config = _load_config(source, spec)
    s_cfg = student.config
    if teacher_config.num_labels != s_cfg.num_labels:
        raise _problem(spec, f"its head has {teacher_config.num_labels} labels, the task "
                             f"'{recipe.task}' needs {s_cfg.num_labels}; use a teacher fine-tuned on "
                             f"{recipe.task}")
    if getattr(teacher_config, "vocab_size", None) != getattr(s_cfg, "vocab_size", None):
        raise _problem(spec, f"its vocabulary ({teacher_config.vocab_size} tokens) differs from the "
                             f"student's ({s_cfg.vocab_size}); teacher and student read the same "
                             "token ids, so they need the same tokenizer")
    architectures = getattr(teacher_config, "architectures", None) or []
    student_head = _head_kind(student)
    if architectures and not any(a.endswith(student_head) for a in architectures):
        raise _problem(spec, f"its head is {architectures[0]}, the task '{recipe.task}' needs a "
                             f"*{student_head} model")
    teacher = task.build_model(ResolvedModel(spec, source.model_path, source.model_path))
    teacher.to(device)
    teacher.eval()
    teacher.requires_grad_(False)
    return Distiller(teacher, source, recipe, task, autocast)


def _load_config(source: TeacherSource, spec: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source.model_path)
    except (OSError, ValueError) as e:
        raise _problem(spec, f"cannot read the teacher's config from {source.model_path} ({e})") from None
