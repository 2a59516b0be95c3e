"""The distillation term, and the :class:`Distiller` that adds it to the task loss.

The loss follows the reference implementation of Sanh et al. (2020)::

    loss = alpha_ce * task_loss + alpha_distil * KL(p_teacher || p_student) * T^2,
    p = softmax(logits / T)

i.e. ``kl_div(log_softmax(z_s / T), softmax(z_t / T), reduction="batchmean") * T^2``: the KL
divergence is summed over the classes (or token positions) of a row and averaged over the rows of
the batch; for several logit tensors (SQuAD's start and end logits) the terms are averaged. For a
regression head the distillation term is the mean-squared error to the teacher's output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from movprune.recipe import Recipe

if TYPE_CHECKING:
    from movprune.tasks.base import Task
    from movprune.training.distill.teacher import TeacherSource


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

    def __init__(self, teacher: torch.nn.Module, source: TeacherSource, recipe: Recipe, task: Task,
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
