"""Bias correction (``pruner.bias_correction: true``), usable by every method: a masked layer
computes ``y = x (W ⊙ M)^T + b + c`` with ``c = (W ⊙ (1 - M)) μ``, the removed weights'
contribution at the layer's running input mean ``μ``. Removing a set of a row's weights whose
products with the input do not cancel (what young movement scores pick, ``benchmarks/movement_probe.py``)
then keeps that output's mean where it was instead of shifting it.

``c`` is not added to the bias once and for all: it is a parametrization of ``bias``, recomputed
from the current mask on every forward pass. A weight that the mask removes at one step and brings
back at a later one (movement masks change every step) therefore takes its correction with it, and
a calibration or any other late change of the mask is followed exactly. ``c`` carries no gradient:
the trained bias ``b`` gets the same gradient as without the correction. ``μ`` is an exponential
moving average of each masked layer's inputs over the training batches (padding positions left
out), kept by a forward pre-hook: no extra pass over the data, and evaluation does not move it.
Baking adds ``c`` (at the final mask and ``μ``) to the bias, so the saved model is an ordinary
model computing what the corrected masked model computed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

#: Decay of the running input mean per training batch (about the last 20 batches count).
INPUT_MEAN_DECAY = 0.9


class BiasCorrection(nn.Module):
    """Parametrization ``b -> b + (W ⊙ (1 - M)) μ`` of a masked layer's bias.

    ``removed_weight`` returns ``W ⊙ (1 - M)`` for the evaluation-state mask (a closure over the
    pruner, kept out of the module tree)."""

    def __init__(self, in_features: int, removed_weight: Callable[[], torch.Tensor]):
        super().__init__()
        self.removed_weight = removed_weight
        # Persistent, so a checkpoint's model.safetensors carries μ (its batch count is in the
        # pruner's state_dict); baking removes it with the parametrization.
        self.register_buffer("input_mean", torch.zeros(in_features))
        self.batches = 0

    @torch.no_grad()
    def offset(self) -> torch.Tensor:
        """``(W ⊙ (1 - M)) μ`` in float32 (zero before the first training batch)."""
        with torch.autocast(self.input_mean.device.type, enabled=False):
            return self.removed_weight().float() @ self.input_mean

    def forward(self, bias: torch.Tensor) -> torch.Tensor:
        if self.batches == 0:
            return bias
        return bias + self.offset().to(bias.dtype)

    @torch.no_grad()
    def observe(self, x: torch.Tensor, token_mask: torch.Tensor | None) -> None:
        """Fold one training batch's mean input (over real tokens) into ``μ``."""
        x = x.detach()
        if token_mask is not None and token_mask.shape == x.shape[:-1]:
            weights = token_mask.to(torch.float32)
            mean = torch.einsum("...,...i->i", weights, x.float()) / weights.sum().clamp_min(1.0)
        else:
            mean = x.reshape(-1, x.shape[-1]).float().mean(0)
        self.batches += 1
        # Bias-corrected EMA (as Adam's moments): the first batch is taken as it is.
        decay = INPUT_MEAN_DECAY * (1 - INPUT_MEAN_DECAY ** (self.batches - 1)) / (1 - INPUT_MEAN_DECAY ** self.batches)
        self.input_mean.mul_(decay).add_(mean, alpha=1.0 - decay)


class BiasCorrector:
    """Attaches :class:`BiasCorrection` to the masked layers of a model, and bakes it."""

    def __init__(self) -> None:
        self.corrections: dict[str, BiasCorrection] = {}
        self._token_mask: dict[str, torch.Tensor | None] = {"value": None}
        self._hooks: list[Any] = []

    def attach(self, model: nn.Module, layers: dict[str, nn.Linear],
               removed_weight: Callable[[str], torch.Tensor]) -> None:
        """Correct the bias of every layer of ``layers`` that has one; ``removed_weight(name)`` gives
        ``W ⊙ (1 - M)`` of layer ``name`` for its evaluation-state mask."""
        self._hooks.append(model.register_forward_pre_hook(self._remember_token_mask, with_kwargs=True))
        for name, layer in layers.items():
            if layer.bias is None:
                continue
            correction = BiasCorrection(layer.in_features, lambda name=name: removed_weight(name))
            parametrize.register_parametrization(layer, "bias", correction)
            self.corrections[name] = correction
            self._hooks.append(layer.register_forward_pre_hook(
                lambda mod, args, c=correction: c.observe(args[0], self._token_mask["value"])
                if mod.training else None))

    def state_dict(self) -> dict[str, int]:
        """The batches each running mean has seen (``μ`` itself is a buffer of the model)."""
        return {name: c.batches for name, c in self.corrections.items()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore :meth:`state_dict`."""
        for name, c in self.corrections.items():
            c.batches = int(state[name])

    def _remember_token_mask(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        # The model's attention mask tells real tokens from padding; the layers see only hidden states.
        mask = kwargs.get("attention_mask")
        self._token_mask["value"] = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None

    @torch.no_grad()
    def bake(self, layers: dict[str, nn.Linear]) -> None:
        """Leave ``b + c`` as each layer's ordinary bias (call while the masks are still attached)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        for name in self.corrections:
            parametrize.remove_parametrizations(layers[name], "bias", leave_parametrized=True)
        self.corrections.clear()
