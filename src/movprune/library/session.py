"""Pruning inside the user's own training code: :class:`PruningSession` drives one pruner through
the calls ``movprune run``'s loop makes (see :class:`~movprune.pruners.base.Pruner`), checking their
order, and saves a run folder at the end (:mod:`movprune.library.save`)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from movprune import pruners
from movprune.errors import PruningSessionError, RecipeError
from movprune.pruners.base import Pruner
from movprune.pruners.config import BasePrunerConfig
from movprune.pruners.counting import prunable_linears, remaining_pct
from movprune.training import optimizer_groups

#: What ``pruner_config`` may be: a ``pruner:`` mapping, a YAML file holding one (or a recipe with a
#: ``pruner:`` section), or a validated config class.
PrunerSpec = Mapping[str, Any] | str | Path | BasePrunerConfig


def load_pruner_config(spec: PrunerSpec, total_steps: int | None = None) -> BasePrunerConfig:
    """The validated config of ``spec``; raises :class:`RecipeError` with one line per problem, as a
    recipe's ``pruner:`` section would (a method that learns its mask refuses ``total_steps`` 0)."""
    from movprune.recipe import read_recipe_data, validate_recipe

    if isinstance(spec, BasePrunerConfig):
        data, source = spec.model_dump(mode="json"), "pruner config"
    elif isinstance(spec, (str, Path)):
        source = str(spec)
        data = read_recipe_data(spec)
        data = data.get("pruner", data) if isinstance(data.get("pruner"), dict) else data
    elif isinstance(spec, Mapping):
        data, source = dict(spec), "pruner config"
    else:
        raise RecipeError("pruner config", [f"expected a mapping, a YAML file or a pruner config class, got "
                                            f"{type(spec).__name__}"])
    # The recipe's own validation, so that the messages are the ones a recipe gets; the task is a
    # placeholder that only carries the pruner section through it.
    train = {} if total_steps is None else {"max_steps": total_steps}
    return validate_recipe({"task": "sst2", "pruner": data, "train": train}, source).pruner


class PruningSession:
    """One pruner over ``total_steps`` optimizer steps of the user's training loop.

    Per optimizer step: :meth:`before_forward` (the schedule), the forward pass, ``loss +``
    :meth:`penalty` when it is not None, backward, the optimizer step, then
    :meth:`after_optimizer_step`. The optimizer must hold :meth:`parameter_groups` (or be built from
    :meth:`optimizer_groups`). At the end :meth:`bake` the masks, evaluate, and :meth:`save`.
    """

    def __init__(self, pruner_config: PrunerSpec, total_steps: int):
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 0:
            raise PruningSessionError(f"total_steps={total_steps!r}: give the number of optimizer steps the "
                                      "training will take (an integer, 0 to prune without training)")
        self.config = load_pruner_config(pruner_config, total_steps)
        self.total_steps = total_steps
        self.pruner: Pruner = pruners.build_pruner(self.config, total_steps)
        self.model: nn.Module | None = None
        self.baked = False
        #: Optimizer steps taken (counted by :meth:`after_optimizer_step`; kept in :meth:`state_dict`).
        self.steps_done = 0
        self.train_seconds = 0.0
        self._started: float | None = None

    # -- set-up -------------------------------------------------------------------------------
    def attach(self, model: nn.Module) -> PruningSession:
        """Register the masks on ``model``'s encoder layers (before the optimizer is built)."""
        if self.model is not None:
            raise PruningSessionError("this pruning session is already attached to a model; create one "
                                      "session per model")
        linears = prunable_linears(model)
        if any(hasattr(layer, "parametrizations") for layer in linears.values()):
            raise PruningSessionError("the model already carries masks (another session is attached to it); "
                                      "attach one session per model, or bake the other one first")
        if not linears:
            raise PruningSessionError(f"{type(model).__name__} has no encoder nn.Linear layer to prune; attach "
                                      "a BERT-family transformers model (e.g. AutoModelForSequenceClassification)")
        self.pruner.attach(model)
        self.model = model
        self._started = time.perf_counter()
        return self

    def calibration_samples(self) -> int:
        """Training examples :meth:`calibrate` wants before training (0: none)."""
        return self.pruner.calibration_samples()

    def calibrate(self, batches: Iterable[dict[str, torch.Tensor]]) -> None:
        """Give a one-shot method its calibration batches (training batches with labels, on the model's
        device, the same on every process), after :meth:`attach` and before the optimizer is built."""
        self._check_attached("calibrate")
        self.pruner.calibrate(self._model(), batches)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimizer groups the pruner adds (its scores, at their own learning rate): add them to
        the optimizer beside the model's weights, which must then leave the scores out."""
        self._check_attached("parameter_groups")
        return self.pruner.parameter_groups()

    def optimizer_groups(self, weight_decay: float = 0.0) -> list[dict[str, Any]]:
        """Every AdamW group, as ``movprune run`` builds them: the weights (``weight_decay``, none on
        biases and LayerNorms) and the scores. ``torch.optim.AdamW(session.optimizer_groups(), lr=...)``."""
        self._check_attached("optimizer_groups")
        return optimizer_groups(self._model(), self.pruner, weight_decay)

    # -- per step -------------------------------------------------------------------------------
    def before_forward(self, step: int) -> None:
        """Move the masks to optimizer step ``step`` (0-based) before its forward pass; with gradient
        accumulation, call it before each micro-batch with the same ``step``."""
        self._check_training("before_forward")
        if self.total_steps == 0:
            raise PruningSessionError("before_forward(): this session was made with total_steps=0 (prune "
                                      "without training); give total_steps the number of optimizer steps to train")
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < self.total_steps:
            raise PruningSessionError(f"before_forward(step={step!r}): steps run from 0 to total_steps - 1 = "
                                      f"{self.total_steps - 1}; give the optimizer step about to be taken")
        self.pruner.step(step)

    def penalty(self) -> torch.Tensor | None:
        """The term to add to the loss (soft movement, L0; None for methods without one)."""
        self._check_training("penalty")
        return self.pruner.penalty()

    def loss(self, task_loss: torch.Tensor) -> torch.Tensor:
        """``task_loss`` plus :meth:`penalty` when there is one."""
        penalty = self.penalty()
        return task_loss if penalty is None else task_loss + penalty

    def after_optimizer_step(self) -> None:
        """After each optimizer step: the method's own update (the λ controller, sensitivity's averages)."""
        self._check_training("after_optimizer_step")
        self.pruner.after_optimizer_step()
        self.steps_done += 1

    def remaining_pct(self) -> float:
        """% of the encoder's weights the model computes with now (after :meth:`bake`: the final %)."""
        self._check_attached("remaining_pct")
        return remaining_pct(self._model()) if self.baked else self.pruner.current_remaining_pct()

    def log_values(self) -> dict[str, float]:
        """Numbers worth logging each step (remaining %, λ, ...)."""
        self._check_attached("log_values")
        return self.pruner.log_values()

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a resumed training needs beyond the model's parameters (which hold the scores) and the
        optimizer: store it with your checkpoint and give it back to :meth:`load_state_dict`."""
        self._check_attached("state_dict")
        return {"pruner": self.pruner.state_dict(), "steps_done": self.steps_done,
                "train_seconds": self._elapsed()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` on a session attached to the resumed model."""
        self._check_training("load_state_dict")
        self.pruner.load_state_dict(dict(state["pruner"]))
        self.steps_done = int(state["steps_done"])
        self.train_seconds = float(state["train_seconds"])
        self._started = time.perf_counter()

    # -- the end --------------------------------------------------------------------------------
    def bake(self) -> None:
        """Put the final masks in and make them ordinary weights (``W * M``); evaluate after this."""
        self._check_training("bake")
        self.train_seconds = self._elapsed()
        self._started = None
        self.pruner.bake(self._model())
        self.baked = True

    def save(self, output_dir: str | Path, tokenizer: Any, *, task: str, metrics: Mapping[str, float], seed: int,
             model_name: str | None = None, train_settings: Mapping[str, Any] | None = None,
             force: bool = False) -> Any:
        """Bake (if not done), then write the run folder ``output_dir`` that ``movprune inspect``,
        ``export`` and ``compare`` read; returns its :class:`~movprune.results.RunResult`.

        ``metrics``: your evaluation of the baked model (in %, the headline first); ``task``: its task
        (a movprune task name such as ``sst2`` where there is one); ``seed``: the seed you trained
        with; ``model_name``: the model you started from (Hub id, folder or alias); ``train_settings``:
        what you trained with (lr, batch size...), recorded in the folder's ``recipe.yaml`` (a setting
        not given there is unknown to ``movprune compare``, not movprune's default). Under
        several processes call it on every process: the masks are compared across them and only the
        main process writes. ``force`` replaces a finished run once the new one is written.
        """
        from movprune.library.save import save_run

        self._check_attached("save")
        if not self.baked:
            self.bake()
        return save_run(self, Path(output_dir), tokenizer, task=task, metrics=dict(metrics), model_name=model_name,
                        seed=seed, train_settings=dict(train_settings or {}), force=force)

    # -- helpers --------------------------------------------------------------------------------
    def _model(self) -> nn.Module:
        assert self.model is not None
        return self.model

    def _elapsed(self) -> float:
        return self.train_seconds + (time.perf_counter() - self._started if self._started is not None else 0.0)

    def _check_attached(self, call: str) -> None:
        if self.model is None:
            raise PruningSessionError(f"{call}() before attach(): attach the session to the model first "
                                      "(movprune.attach(model, pruner_config, total_steps))")

    def _check_training(self, call: str) -> None:
        self._check_attached(call)
        if self.baked:
            raise PruningSessionError(f"{call}() after bake(): the masks are final and the session is over")


def attach(model: nn.Module, pruner_config: PrunerSpec, total_steps: int) -> PruningSession:
    """A :class:`PruningSession` for ``pruner_config`` (a ``pruner:`` mapping such as
    ``{"method": "movement", "remaining_pct": 10}``, a YAML file, or a config class) over
    ``total_steps`` optimizer steps, attached to ``model``."""
    return PruningSession(pruner_config, total_steps).attach(model)
