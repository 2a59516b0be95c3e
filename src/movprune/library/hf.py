"""Hugging Face ``Trainer`` integration: :class:`PruningTrainer`, a ``Trainer`` subclass.

A subclass, not a callback: a callback sees the optimizer only after the Trainer has built it from
the model's parameters, and it cannot change the loss. The scores must be in the optimizer at their
own learning rate (``create_optimizer``) and the soft-movement / L0 penalty in the loss
(``compute_loss``). The points that need no more than a callback are one
(:class:`PruningCallback`): the post-step hook (``on_optimizer_step``). The pruner's state goes into
each checkpoint folder inside ``_save_checkpoint``, before the Trainer writes its own files and
rotates the old checkpoints: a folder holding ``trainer_state.json`` (the Trainer's last file) then
holds the pruner's state too. A resumed ``train(resume_from_checkpoint=...)`` reads it back; the
scores are parameters of the model, so the Trainer's own checkpoint holds them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from movprune import distributed
from movprune.errors import PruningSessionError
from movprune.io import fsync_dir, fsync_tree
from movprune.library.session import PrunerSpec, PruningSession
from movprune.training import read_state, write_state

#: Stem of the pruner's state in a Trainer checkpoint folder (``.json`` + ``.safetensors``).
STATE_STEM = "movprune_pruner_state"


class PruningCallback(TrainerCallback):
    """The session's post-step hook after every optimizer step."""

    def __init__(self, session: PruningSession):
        self.session = session

    def on_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                          **kwargs: Any) -> None:
        """:meth:`PruningSession.after_optimizer_step` once the optimizer has stepped."""
        self.session.after_optimizer_step()


def save_session_state(session: PruningSession, folder: Path) -> None:
    """Write ``session.state_dict()`` into a checkpoint ``folder`` atomically: the tensors, then
    ``movprune_pruner_state.json``, each renamed into place, so that the ``.json`` is there only when
    the whole state is."""
    staging = folder / f".{STATE_STEM}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write_state(staging, STATE_STEM, session.state_dict())
    fsync_tree(staging)
    for suffix in (".safetensors", ".json"):  # the .json last: it marks the state complete
        os.replace(staging / f"{STATE_STEM}{suffix}", folder / f"{STATE_STEM}{suffix}")
    staging.rmdir()
    fsync_dir(folder)


def has_session_state(folder: Path) -> bool:
    """Whether ``folder`` is a complete PruningTrainer checkpoint: the pruner's state and the Trainer's."""
    return (folder / f"{STATE_STEM}.json").is_file() and (folder / TRAINER_STATE_NAME).is_file()


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest ``checkpoint-N`` of ``output_dir`` that :func:`has_session_state` (a kill while one
    was being written leaves a newer, incomplete folder that is passed over); None when there is none."""
    root = Path(output_dir)
    found = []
    for path in root.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if root.is_dir() else ():
        number = path.name[len(PREFIX_CHECKPOINT_DIR) + 1:]
        if path.is_dir() and number.isdigit() and has_session_state(path):
            found.append((int(number), path))
    return max(found)[1] if found else None


def load_session_state(session: PruningSession, folder: Path) -> None:
    """Restore what :func:`save_session_state` wrote into ``folder``; raises
    :class:`PruningSessionError` (one line) when it is missing or unreadable."""
    if not (folder / f"{STATE_STEM}.json").is_file():
        raise PruningSessionError(f"{folder}: no {STATE_STEM}.json; this checkpoint was not written by a "
                                  "PruningTrainer (or its writing was interrupted), so the pruner cannot resume "
                                  "from it; resume from an earlier checkpoint")
    try:
        state = read_state(folder, STATE_STEM)
        session.load_state_dict(state)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise PruningSessionError(f"{folder}: the pruner's state ({STATE_STEM}.*) is unreadable ({reason}); "
                                  "resume from an earlier checkpoint") from None


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
        # A BERT-family head's loss is the mean over its micro-batch and ignores ``num_items_in_batch``,
        # but its forward takes ``**kwargs``, so the Trainer would count it as already scaled for
        # gradient accumulation and not divide it: the task loss, the distillation term and the
        # penalty would each weigh gradient_accumulation_steps times more than at one micro-batch.
        # With this, each micro-batch's whole loss is divided by the number of micro-batches.
        self.model_accepts_loss_kwargs = False

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
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

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any],
                      num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
        """The schedule moves to this optimizer step before the forward pass."""
        self.pruning.before_forward(self.state.global_step)
        return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None) -> Any:
        """The Trainer's loss (with the teacher's distillation term) plus the pruner's penalty while
        training: one micro-batch's loss, the penalty and the distillation term weighed as the task loss
        is under gradient accumulation (:meth:`_micro_batch_share`)."""
        training = model.training and not self.pruning.baked
        distil = training and self.teacher is not None
        out = super().compute_loss(model, inputs, return_outputs=return_outputs or distil,
                                   num_items_in_batch=num_items_in_batch)
        if not training:
            return out
        loss, outputs = out if return_outputs or distil else (out, None)
        share = self._micro_batch_share()
        if distil:  # the distillation term weighs `share` of a step, as the task loss does
            loss = self._with_teacher(loss / share, outputs, inputs) * share
        penalty = self.pruning.penalty()
        if penalty is not None:
            loss = loss + penalty * share
        return (loss, outputs) if return_outputs else loss

    def _micro_batch_share(self) -> float:
        """What one micro-batch's penalty and distillation term must weigh so that a step counts each
        once: 1 when the Trainer divides the loss by the number of micro-batches, else (a
        ``compute_loss_func`` or ``loss_is_scaled_for_ga`` says the task loss comes scaled already) 1 over it."""
        scaled = getattr(self, "loss_is_scaled_for_ga", None)
        if scaled is None:
            scaled = self.compute_loss_func is not None
        return 1.0 / getattr(self, "current_gradient_accumulation_steps", 1) if scaled else 1.0

    def _with_teacher(self, loss: torch.Tensor, outputs: Any, inputs: dict[str, Any]) -> torch.Tensor:
        from movprune.library.distill import with_distillation

        device = loss.device
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        with torch.no_grad():
            teacher_outputs = self.teacher(**inputs)
        return with_distillation(loss, _logits(outputs), _logits(teacher_outputs),
                                 regression=getattr(self.teacher.config, "num_labels", 2) == 1, **self.distillation)

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """The pruner's state into ``checkpoint-N/`` first, then the Trainer's own checkpoint (whose
        ``trainer_state.json`` comes last, before older checkpoints are rotated out)."""
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save:
            save_session_state(self.pruning, folder)
        super()._save_checkpoint(model, trial)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train``; a resumed run restores the pruner's state from the checkpoint too.
        ``resume_from_checkpoint=True`` takes the newest checkpoint that holds the pruner's state and the
        Trainer's (:func:`last_complete_checkpoint`)."""
        if isinstance(resume_from_checkpoint, bool) and resume_from_checkpoint:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise PruningSessionError(f"resume_from_checkpoint=True: no complete PruningTrainer checkpoint "
                                          f"({PREFIX_CHECKPOINT_DIR}-N with {STATE_STEM}.json and "
                                          f"{TRAINER_STATE_NAME}) in {self.args.output_dir}")
            resume_from_checkpoint = str(resume_from_checkpoint)
        if resume_from_checkpoint:
            load_session_state(self.pruning, Path(resume_from_checkpoint))
        return super().train(resume_from_checkpoint, *args, **kwargs)


def _logits(outputs: Any) -> list[torch.Tensor]:
    """The logits a head gives: one tensor (classification), or start and end (question answering)."""
    if getattr(outputs, "logits", None) is not None:
        return [outputs.logits]
    return [outputs.start_logits, outputs.end_logits]
