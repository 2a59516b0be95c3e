"""Distillation from a dense teacher in the user's own loop: the loss ``movprune run`` uses."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from movprune.training import distillation_loss


def with_distillation(task_loss: torch.Tensor, student_logits: torch.Tensor | Sequence[torch.Tensor],
                      teacher_logits: torch.Tensor | Sequence[torch.Tensor], *, alpha_ce: float = 0.5,
                      alpha_distil: float = 0.5, temperature: float = 2.0, regression: bool = False) -> torch.Tensor:
    """``alpha_ce * task_loss + alpha_distil * KL(p_teacher || p_student) * T^2`` (the paper's loss;
    the mean-squared error to the teacher for a regression head). Logits are one tensor, or several
    (a question-answering head's start and end logits); compute the teacher's under ``torch.no_grad()``."""
    student = [student_logits] if isinstance(student_logits, torch.Tensor) else list(student_logits)
    teacher = [teacher_logits] if isinstance(teacher_logits, torch.Tensor) else list(teacher_logits)
    return alpha_ce * task_loss + alpha_distil * distillation_loss(student, teacher, temperature, regression)
