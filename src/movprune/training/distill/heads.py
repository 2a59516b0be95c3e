"""Loading a teacher with the task's head, after checking that the head fits the student's."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from movprune.models import ResolvedModel
from movprune.recipe import Recipe
from movprune.training.distill.loss import Distiller
from movprune.training.distill.teacher import TeacherSource, problem

if TYPE_CHECKING:
    from movprune.tasks.base import Task


def _head_kind(model: torch.nn.Module) -> str:
    """``ForSequenceClassification``, ``ForQuestionAnswering``, ...: what a head does, for any backbone."""
    name = type(model).__name__
    return name[name.find("For"):] if "For" in name else name


def load_teacher(source: TeacherSource, recipe: Recipe, task: Task, student: torch.nn.Module,
                 device: torch.device, autocast: Callable[[], Any]) -> Distiller:
    """Load the teacher with the task's head on ``device`` and check it fits the student.

    Raises :class:`ModelError` when the teacher's head differs from the student's (another kind
    of head, another number of labels, or another vocabulary).
    """
    spec = recipe.distill.teacher
    teacher_config = _load_config(source, spec)
    s_cfg = student.config
    if teacher_config.num_labels != s_cfg.num_labels:
        raise problem(spec, f"its head has {teacher_config.num_labels} labels, the task "
                             f"'{recipe.task}' needs {s_cfg.num_labels}; use a teacher fine-tuned on "
                             f"{recipe.task}")
    if getattr(teacher_config, "vocab_size", None) != getattr(s_cfg, "vocab_size", None):
        raise problem(spec, f"its vocabulary ({teacher_config.vocab_size} tokens) differs from the "
                             f"student's ({s_cfg.vocab_size}); teacher and student read the same "
                             "token ids, so they need the same tokenizer")
    architectures = getattr(teacher_config, "architectures", None) or []
    student_head = _head_kind(student)
    if architectures and not any(a.endswith(student_head) for a in architectures):
        raise problem(spec, f"its head is {architectures[0]}, the task '{recipe.task}' needs a "
                             f"*{student_head} model")
    teacher = task.build_model(ResolvedModel(spec, source.model_path, source.model_path))
    teacher.to(device)
    teacher.eval()
    teacher.requires_grad_(False)
    return Distiller(teacher, source, recipe, task, autocast)


def _load_config(source: TeacherSource, spec: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source.model_path, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise problem(spec, f"cannot read the teacher's config from {source.model_path} ({e})") from None
