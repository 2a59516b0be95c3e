"""The masked layer and the pruner interface every method implements.

A pruner never forks the model class: it registers a ``torch.nn.utils.parametrize``
parametrization on the ``weight`` of each encoder ``nn.Linear``, so the layer computes with
``W * M``. Baking removes the parametrizations and leaves ``W * M`` as an ordinary weight, which
``save_pretrained`` writes like any other model.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.utils import parametrize

from movprune.models import ResolvedModel
from movprune.pruners.bias_correction import BiasCorrector
from movprune.pruners.config import BasePrunerConfig
from movprune.pruners.counting import prunable_linears
from movprune.pruners.grouping import Grouping, build_groupings
from movprune.pruners.schedule import CubicSchedule, Schedule


class MaskedWeight(nn.Module):
    """Parametrization ``W -> W * mask``; subclasses define :meth:`mask`."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask(weight)

    def mask(self, weight: torch.Tensor) -> torch.Tensor:
        """The mask applied to ``weight`` (same shape; one entry per group for a grouped mask)."""
        raise NotImplementedError

    def is_dense(self) -> bool:
        """True while the mask keeps everything and needs no gradient (the forward pass is ``W``)."""
        return False


class MemberMask(MaskedWeight):
    """Parametrization of one matrix of a multi-matrix or block :class:`Grouping`: the group mask
    (computed by ``owner``, one entry per group) expanded over this matrix's blocks."""

    def __init__(self, owner: MaskedWeight, grouping: Grouping, index: int):
        super().__init__()
        self.owner = owner  # a submodule, so the scores move and save with the model
        self.grouping = grouping
        self.index = index

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.owner.is_dense():
            return weight
        return weight * self.mask(weight)

    def mask(self, weight: torch.Tensor) -> torch.Tensor:
        return self.grouping.expand(self.owner.mask(weight), self.index)


class Pruner:
    """One pruning method: attaches masks to a model, follows the schedule, and bakes the result.

    The training loop calls, in order: :meth:`attach` once; :meth:`calibrate` once with
    :meth:`calibration_samples` examples of the train split when that is above 0 (one-shot methods
    decide their mask there); then per step :meth:`step` before the forward pass, adds :meth:`penalty`
    to the loss, and calls :meth:`after_optimizer_step`; a mid-run evaluation runs inside
    :meth:`evaluation`; :meth:`bake` (which calls :meth:`finalize`) before the final evaluation and
    the save. With ``train.max_steps: 0`` there are no steps: attach, calibrate, bake, evaluate, publish.
    """

    name: ClassVar[str]
    #: Whether ``remaining_pct`` is required (else it may be null, e.g. a fixed-lambda run).
    NEEDS_TARGET: ClassVar[bool] = True
    #: Whether the method masks weights at all (dense fine-tuning does not).
    MASKS_WEIGHTS: ClassVar[bool] = True
    #: Whether the mask comes from training (learned scores, gradients): such a method cannot run
    #: with ``train.max_steps: 0``. Magnitude (the weights alone) and calibrated methods can.
    NEEDS_TRAINING: ClassVar[bool] = False

    def __init__(self, config: BasePrunerConfig, total_steps: int):
        self.config = config
        self.total_steps = total_steps
        self.layers: dict[str, nn.Linear] = {}
        self.masks: dict[str, MaskedWeight] = {}
        #: mask name -> its grouping (``pruner.pattern``); unstructured masks are named by their layer.
        self.groupings: dict[str, Grouping] = {}
        self.current_step = 0
        self.bias_corrector = BiasCorrector() if config.bias_correction else None
        self.schedule = self.make_schedule()

    # -- configuration -------------------------------------------------------------------
    @classmethod
    def check(cls, config: BasePrunerConfig) -> list[str]:
        """Problems with ``config`` for this method, one line each (empty when valid)."""
        problems = []
        if config.remaining_pct is None and cls.needs_target(config):
            problems.append(f"pruner.remaining_pct: method '{cls.name}' needs a target "
                            "(e.g. pruner.remaining_pct=10 to keep 10% of encoder weights)")
        if config.bias_correction and not cls.MASKS_WEIGHTS:
            problems.append(f"pruner.bias_correction: method '{cls.name}' removes no weights, so there is "
                            "nothing to correct; drop the key or pick a pruning method")
        return problems

    @classmethod
    def needs_target(cls, config: BasePrunerConfig) -> bool:
        """Whether ``config`` needs ``remaining_pct`` (:attr:`NEEDS_TARGET`, unless another budget it sets decides)."""
        return cls.NEEDS_TARGET

    @classmethod
    def input_problems(cls, config: BasePrunerConfig, model: ResolvedModel) -> list[str]:
        """Problems with the files ``config`` names (e.g. a lookup table) for a run about to train
        ``model``, one line each. Checked with the run's data and model, before training (also under
        ``--dry-run``), never when a finished run's recipe is read again: :meth:`check` reads no file."""
        return []

    @classmethod
    def check_budget(cls, config: BasePrunerConfig, max_steps: int | None) -> list[str]:
        """Problems with running this method for ``max_steps`` training steps (None: by epochs)."""
        if max_steps == 0 and cls.NEEDS_TRAINING:
            return [f"train.max_steps: 0 trains nothing, and method '{cls.name}' decides its mask by "
                    "training; give it steps (e.g. train.max_steps=300) or pick a method that prunes "
                    "without training (magnitude, or fisher from a fine-tuned model)"]
        return []

    def make_schedule(self) -> Schedule:
        """The kept fraction per step; the cubic schedule from dense to ``remaining_pct`` by default."""
        c = self.config
        final = (c.remaining_pct if c.remaining_pct is not None else 100.0) / 100.0
        return CubicSchedule(self.total_steps, final, c.initial_warmup, c.final_warmup)

    @property
    def target_remaining_pct(self) -> float | None:
        """The % of encoder weights the run should end with (None when it follows from lambda)."""
        return self.config.remaining_pct

    # -- life cycle ----------------------------------------------------------------------
    def make_mask(self, name: str, layer: nn.Linear) -> MaskedWeight | None:
        """The parametrization for one layer (None leaves it dense)."""
        raise NotImplementedError

    def make_group_mask(self, grouping: Grouping) -> MaskedWeight:
        """The mask of a block or hybrid :class:`Grouping`: one entry per group, in
        ``grouping.score_shape``. Methods that support ``pruner.pattern`` override this."""
        raise NotImplementedError

    @classmethod
    def supports_patterns(cls) -> bool:
        """Whether the method prunes blocks, heads and neurons (``pruner.pattern``)."""
        return cls.make_group_mask is not Pruner.make_group_mask

    def attach(self, model: nn.Module) -> None:
        """Register a mask on every encoder ``nn.Linear`` of ``model`` (one per grouping of
        ``pruner.pattern``: per matrix when unstructured)."""
        linears = prunable_linears(model)
        pattern = getattr(self.config, "pattern", "unstructured")
        if pattern == "unstructured" or not self.supports_patterns():
            for name, layer in linears.items():
                mask = self.make_mask(name, layer)
                if mask is None:
                    continue
                parametrize.register_parametrization(layer, "weight", mask)
                self.layers[name] = layer
                self.masks[name] = mask
                self.groupings[name] = build_groupings("unstructured", {name: layer})[0]
        else:
            for grouping in build_groupings(pattern, linears, getattr(model, "config", None),
                                            self.config.block_shape):
                mask = self.make_group_mask(grouping)
                for index, member in enumerate(grouping.members):
                    layer = linears[member.name]
                    parametrize.register_parametrization(layer, "weight", MemberMask(mask, grouping, index))
                    self.layers[member.name] = layer
                self.masks[grouping.name] = mask
                self.groupings[grouping.name] = grouping
        if self.bias_corrector is not None:
            self.bias_corrector.attach(model, self.layers, self.removed_weight)
        self.step(0)

    @property
    def grouped(self) -> bool:
        """True when some mask decides groups of several weights (block or hybrid pattern)."""
        return any(not g.identity for g in self.groupings.values())

    def group_numel(self, name: str) -> int:
        """Weights one entry of mask ``name`` decides (1 when unstructured)."""
        return self.groupings[name].group_numel if name in self.groupings else 1

    def member_weights(self, name: str) -> list[torch.Tensor]:
        """The unmasked weights of the matrices mask ``name`` covers."""
        return [self.original_weight(m.name) for m in self.groupings[name].members]

    def calibration_samples(self) -> int:
        """Examples of the train split :meth:`calibrate` wants (0: the method needs no calibration)."""
        return 0

    def calibrate(self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> None:
        """Decide what can be decided from data before training (a one-shot method's mask).

        Called once, after :meth:`attach` and before the optimizer is built, when
        :meth:`calibration_samples` is above 0. ``batches`` are collated training batches on the
        model's device, with labels, holding :meth:`calibration_samples` examples in a fixed order
        that depends on the seed only (the same on every process). ``model`` is in train mode and
        may be put in eval mode; it is left in the mode it came in.
        """

    def step(self, step: int) -> None:
        """Move the schedule to ``step`` (called before each forward pass)."""
        self.current_step = step

    def penalty(self) -> torch.Tensor | None:
        """Regularisation term added to the loss (None when the method has none)."""
        return None

    def after_optimizer_step(self) -> None:
        """Hook after each optimizer step (e.g. a controller update)."""

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        """The masks an evaluation between two training steps should see, for the ``with`` block:
        the schedule's next step, computed from the scores the last optimizer step left.

        Computing them moves state the training steps rely on (a top-k search band, a controller),
        so the block starts from a copy of :meth:`state_dict` and restores it on exit: the next
        training step then computes what it would have without the evaluation, and a run with
        mid-run evaluations has the numbers of the same run without them."""
        saved = copy.deepcopy(self.state_dict())
        self.step(self.current_step + 1)
        try:
            yield
        finally:
            self.load_state_dict(saved)

    def finalize(self) -> None:
        """Put the masks in their final state (evaluation always uses the final mask)."""
        self.step(self.total_steps)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Extra optimizer parameter groups (scores with their own learning rate)."""
        return []

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs beyond the model's parameters (the scores are parameters of the
        parametrizations, so they travel with the model): numbers, strings, nested dicts and
        tensors. Subclasses extend it; :meth:`load_state_dict` takes it back."""
        state: dict[str, Any] = {"current_step": self.current_step}
        if self.bias_corrector is not None:
            state["bias_correction_batches"] = self.bias_corrector.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` on an attached pruner. The masks are not recomputed here:
        the next :meth:`step` computes them from the restored scores, as it would have."""
        self.current_step = int(state["current_step"])
        if self.bias_corrector is not None:
            self.bias_corrector.load_state_dict(state["bias_correction_batches"])

    def log_values(self) -> dict[str, float]:
        """Numbers worth logging each step (current remaining %, lambda, ...)."""
        return {"remaining_pct": self.current_remaining_pct()}

    def summary(self) -> dict[str, Any]:
        """How the run's final mask came about (e.g. a calibration step), for ``result.json``."""
        return {}

    def current_remaining_pct(self) -> float:
        """Remaining % of the masked weights as the layers compute them now."""
        if not self.layers:
            return 100.0
        kept = total = 0
        with torch.no_grad():
            for layer in self.layers.values():
                kept += int(torch.count_nonzero(layer.weight).item())
                total += layer.weight.numel()
        return 100.0 * kept / total

    @torch.no_grad()
    def bake(self, model: nn.Module) -> None:
        """Replace each parametrized weight by ``W * M`` (eval-mode mask) and drop the masks."""
        was_training = model.training
        model.eval()
        self.finalize()
        if self.bias_corrector is not None:  # b + c needs the final masks: before they go
            self.bias_corrector.bake(self.layers)
        for layer in self.layers.values():
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
        self.layers.clear()
        self.masks.clear()
        model.train(was_training)

    # -- helpers for subclasses -------------------------------------------------------------
    def scores_group(self, scores: list[torch.Tensor]) -> dict[str, Any]:
        """The optimizer group of a method's scores: their own learning rate, no weight decay, and
        PyTorch's fused AdamW kernel where it exists (same update, 4x cheaper on one CPU thread for
        MiniLM's 10.6M scores: 12 ms instead of 48 ms per step). Accelerate may later move the
        model to a GPU; the fused kernel runs on CPU and CUDA but not on every other backend."""
        group: dict[str, Any] = {"params": scores, "lr": self.config.scores_lr, "weight_decay": 0.0,
                                 "name": "scores"}
        if not torch.backends.mps.is_available():
            group["fused"] = True
        return group

    def original_weight(self, name: str) -> torch.Tensor:
        """The unmasked weight of layer ``name``."""
        return self.layers[name].parametrizations.weight.original

    @torch.no_grad()
    def removed_weight(self, name: str) -> torch.Tensor:
        """``W - W ⊙ M`` of layer ``name`` under its evaluation-state mask (for L0, the deterministic
        gate, which also scales the weights it keeps), i.e. the part of ``W`` the layer leaves out."""
        # The layer's own parametrization: the mask itself, or its share of a grouped (pattern) mask.
        mask, weight = self.layers[name].parametrizations.weight[0], self.original_weight(name)
        was_training = mask.training
        mask.train(False)
        try:
            return weight - mask(weight)
        finally:
            mask.train(was_training)

    def scheduled_fraction(self, step: int) -> float:
        """Kept fraction at ``step`` on the pruner's :attr:`schedule`."""
        return self.schedule.fraction(step)

