"""Hugging Face ``Trainer`` integration: :class:`PruningTrainer`, a ``Trainer`` subclass.

A subclass, not a callback: a callback sees the optimizer only after the Trainer has built it from
the model's parameters, and it cannot change the loss. The scores must be in the optimizer at their
own learning rate (``create_optimizer``) and the soft-movement / L0 penalty in the loss
(``compute_loss``). The points that need no more than a callback are one
(:class:`PruningCallback`): the post-step hook (``on_optimizer_step``) and the pruner's state in
each checkpoint folder (``on_save``). A resumed ``train(resume_from_checkpoint=...)`` reads it back;
the scores are parameters of the model, so the Trainer's own checkpoint holds them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from movprune import distributed
from movprune.errors import PruningSessionError
from movprune.library.session import PrunerSpec, PruningSession
from movprune.training.checkpoint import read_state, write_state

#: Stem of the pruner's state in a Trainer checkpoint folder (``.json`` + ``.safetensors``).
STATE_STEM = "movprune_pruner_state"


class PruningCallback(TrainerCallback):
    """The session's post-step hook after every optimizer step, and its state in every checkpoint."""

    def __init__(self, session: PruningSession):
        self.session = session

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.session.after_optimizer_step()

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if folder.is_dir():
                save_session_state(self.session, folder)


def save_session_state(session: PruningSession, folder: Path) -> None:
    """Write ``session.state_dict()`` into a checkpoint ``folder``."""
    state = session.state_dict()
    write_state(folder, STATE_STEM, state["pruner"])
    (folder / f"{STATE_STEM}.session.json").write_text(
        json.dumps({"steps_done": state["steps_done"], "train_seconds": state["train_seconds"]}) + "\n",
        encoding="utf-8")


def load_session_state(session: PruningSession, folder: Path) -> None:
    """Restore what :func:`save_session_state` wrote into ``folder``."""
    if not (folder / f"{STATE_STEM}.json").is_file():
        raise PruningSessionError(f"{folder}: no {STATE_STEM}.json; this checkpoint was not written by a "
                                  "PruningTrainer, so the pruner cannot resume from it")
    extra = json.loads((folder / f"{STATE_STEM}.session.json").read_text(encoding="utf-8"))
    session.load_state_dict({"pruner": read_state(folder, STATE_STEM), **extra})


class PruningTrainer(Trainer):
    """A ``transformers.Trainer`` that fine-prunes its model.

    ``pruning`` is a :class:`PruningSession` (not yet attached, or attached to ``model``) or a
    pruner config (a ``pruner:`` mapping, a YAML file, a config class), scheduled over
    ``args.max_steps`` optimizer steps. ``teacher`` (a model with the same head) adds ``movprune
    run``'s distillation term to the training loss, weighted by ``distillation`` (``alpha_ce``,
    ``alpha_distil``, ``temperature``; 0.5, 0.5, 2.0 by default). Everything else is the Trainer's
    own: the optimizer class and its settings (``args.optim``, ``learning_rate``, ``weight_decay``),
    the LR schedule, gradient accumulation, checkpoints, ``accelerate launch`` / ``torchrun``. Call
    :meth:`PruningSession.bake` (``trainer.pruning.bake()``) before the final evaluation.
    """

    def __init__(self, *args: Any, pruning: PruningSession | PrunerSpec, teacher: torch.nn.Module | None = None,
                 distillation: dict[str, float] | None = None, **kwargs: Any):
        model = kwargs.get("model", args[0] if args else None)
        training_args = kwargs.get("args", args[1] if len(args) > 1 else None)
        if model is None or training_args is None:
            raise PruningSessionError("PruningTrainer needs model= and args= (TrainingArguments)")
        launched = distributed.launched_world_size()
        if launched > 1 and training_args.world_size != launched:
            raise PruningSessionError(
                f"PruningTrainer: launched as {launched} processes but the Trainer runs {training_args.world_size} "
                "(without a GPU accelerate trains independent copies, whose masks differ); set "
                "TrainingArguments(use_cpu=True) on a machine without a GPU")
        if not isinstance(pruning, PruningSession):
            if training_args.max_steps is None or training_args.max_steps <= 0:
                raise PruningSessionError(
                    "PruningTrainer: set TrainingArguments(max_steps=N); the pruning schedule needs the number "
                    "of optimizer steps (or pass a PruningSession built with total_steps)")
            pruning = PruningSession(pruning, training_args.max_steps)
        if pruning.model is None:
            pruning.attach(model)
        elif pruning.model is not model:
            raise PruningSessionError("PruningTrainer: the pruning session is attached to another model than "
                                      "the Trainer's")
        #: The session: ``trainer.pruning.bake()`` and ``trainer.pruning.save(...)`` at the end.
        self.pruning = pruning
        #: A dense teacher to distil from while training (:func:`~movprune.library.with_distillation`),
        #: with ``distillation``'s ``alpha_ce``, ``alpha_distil``, ``temperature``.
        self.teacher = teacher.eval().requires_grad_(False) if teacher is not None else None
        self.distillation = dict(distillation or {})
        callbacks = [*(kwargs.pop("callbacks", None) or []), PruningCallback(pruning)]
        super().__init__(*args, callbacks=callbacks, **kwargs)

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """The Trainer's optimizer class and settings over the session's groups (scores included)."""
        if self.optimizer is None:
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            groups = self.pruning.optimizer_groups(self.args.weight_decay)
            if optimizer_cls is not torch.optim.AdamW:  # "fused" is an AdamW option
                groups = [{k: v for k, v in g.items() if k != "fused"} for g in groups]
            elif optimizer_kwargs.get("fused"):
                groups = [{k: v for k, v in g.items() if k != "fused"} for g in groups]
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        else:  # the user's own (Trainer(optimizers=...)): without the scores the masks would never learn
            held = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
            if any(id(p) not in held for g in self.pruning.parameter_groups() for p in g["params"]):
                raise PruningSessionError(
                    "PruningTrainer: the optimizer given in optimizers= does not hold the pruner's scores; build "
                    "it from trainer.pruning.optimizer_groups(...) or add trainer.pruning.parameter_groups()")
        return self.optimizer

    def training_step(self, model, inputs, num_items_in_batch=None):
        """The schedule moves to this optimizer step before the forward pass."""
        self.pruning.before_forward(self.state.global_step)
        return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The Trainer's loss (with the teacher's distillation term) plus the pruner's penalty while training."""
        training = model.training and not self.pruning.baked
        distil = training and self.teacher is not None
        out = super().compute_loss(model, inputs, return_outputs=return_outputs or distil,
                                   num_items_in_batch=num_items_in_batch)
        if not training:
            return out
        loss, outputs = out if return_outputs or distil else (out, None)
        if distil:
            loss = self._with_teacher(loss, outputs, inputs)
        penalty = self.pruning.penalty()
        if penalty is not None:
            loss = loss + penalty
        return (loss, outputs) if return_outputs else loss

    def _with_teacher(self, loss: torch.Tensor, outputs: Any, inputs: dict[str, Any]) -> torch.Tensor:
        from movprune.library.distill import with_distillation

        device = loss.device
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        with torch.no_grad():
            teacher_outputs = self.teacher(**inputs)
        return with_distillation(loss, _logits(outputs), _logits(teacher_outputs),
                                 regression=getattr(self.teacher.config, "num_labels", 2) == 1, **self.distillation)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        """``Trainer.train``; a resumed run restores the pruner's state from the checkpoint too."""
        if isinstance(resume_from_checkpoint, bool) and resume_from_checkpoint:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise PruningSessionError(f"resume_from_checkpoint=True: no checkpoint in {self.args.output_dir}")
        if resume_from_checkpoint:
            load_session_state(self.pruning, Path(resume_from_checkpoint))
        return super().train(resume_from_checkpoint, *args, **kwargs)


def _logits(outputs: Any) -> list[torch.Tensor]:
    """The logits a head gives: one tensor (classification), or start and end (question answering)."""
    if getattr(outputs, "logits", None) is not None:
        return [outputs.logits]
    return [outputs.start_logits, outputs.end_logits]
