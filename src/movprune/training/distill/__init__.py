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

One concern per module: :mod:`.loss` (the distillation term and the :class:`Distiller` that adds
it to the task loss), :mod:`.teacher` (resolving a given teacher), :mod:`.cache` (the automatic
teacher, trained once under a lock), :mod:`.heads` (loading a teacher and checking that its head
fits the student's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from movprune.recipe import Recipe
from movprune.training.distill.cache import (
    auto_teacher,
    teacher_key,
    teacher_key_parts,
    teacher_recipe,
    teachers_dir,
)
from movprune.training.distill.heads import load_teacher
from movprune.training.distill.loss import Distiller, distillation_loss, kl_divergence
from movprune.training.distill.teacher import AUTO, TeacherKind, TeacherSource, check_teacher, resolve_given_teacher

__all__ = [
    "AUTO", "Distiller", "TeacherKind", "TeacherSource", "auto_teacher", "check_teacher", "distillation_loss",
    "kl_divergence", "load_teacher", "prepare_teacher", "resolve_given_teacher", "teacher_key",
    "teacher_key_parts", "teacher_recipe", "teachers_dir",
]


def prepare_teacher(recipe: Recipe, train: Callable[[Recipe], Any],
                    on_phase: Callable[[str], None] = lambda text: None) -> TeacherSource:
    """Resolve ``recipe.distill.teacher``, training the automatic teacher first when needed."""
    if recipe.distill.teacher == AUTO:
        return auto_teacher(recipe, train, on_phase)
    return resolve_given_teacher(recipe)
