"""Pruning methods. Each method is one module defining a :class:`~movprune.pruners.base.Pruner`
subclass; register it in ``_METHODS`` below. Nothing outside this package branches on a method's
name."""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING

from movprune.pruners.config import PrunerConfig

if TYPE_CHECKING:  # the pruners import torch; the recipe's validation need not
    from movprune.pruners.base import Pruner

# method name -> "module:class"
_METHODS = {
    "none": "movprune.pruners.none:NoPruner",
    "magnitude": "movprune.pruners.magnitude:MagnitudePruner",
    "movement": "movprune.pruners.movement:MovementPruner",
    "soft_movement": "movprune.pruners.soft_movement:SoftMovementPruner",
    "l0": "movprune.pruners.l0:L0Pruner",
}

# Keys of PrunerConfig that some method, not all, uses.
_METHOD_KEYS = ("scores_lr", "scores_init", "lambda_final", "sigmoid_threshold_initial",
                "sigmoid_threshold_final")


def method_names() -> list[str]:
    """All registered pruning methods."""
    return list(_METHODS)


def pruner_class(method: str) -> type[Pruner]:
    """The Pruner subclass for ``method`` (KeyError when unknown)."""
    module, cls = _METHODS[method].split(":")
    return getattr(importlib.import_module(module), cls)


def check_name(method: str) -> list[str]:
    """A one-line problem when ``method`` is not a registered pruning method (with a "did you mean")."""
    if method not in _METHODS:
        close = difflib.get_close_matches(method, list(_METHODS), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"choose one of: {', '.join(_METHODS)}"
        return [f"pruner.method: unknown pruning method '{method}' ({hint})"]
    return []


def check_config(config: PrunerConfig) -> list[str]:
    """Problems with a recipe's ``pruner:`` section, one line each."""
    problems = check_name(config.method) or pruner_class(config.method).check(config)
    if not problems and config.pattern != "unstructured" and not pruner_class(config.method).supports_patterns():
        able = [m for m in _METHODS if pruner_class(m).supports_patterns()]
        problems.append(f"pruner.pattern: method '{config.method}' has no masks to shape; pattern "
                        f"'{config.pattern}' applies to {', '.join(able)}")
    return problems


def resolve_defaults(config: PrunerConfig) -> PrunerConfig:
    """Fill the method's defaults into null method-specific keys and clear keys it does not use,
    so the resolved recipe shows exactly what took effect."""
    cls = pruner_class(config.method)
    defaults = cls.defaults_for(config)
    update = {}
    for key in _METHOD_KEYS:
        if key not in cls.DEFAULTS:
            update[key] = None
        elif getattr(config, key) is None and key in defaults:
            update[key] = defaults[key]
    return config.model_copy(update=update)


def build_pruner(config: PrunerConfig, total_steps: int) -> Pruner:
    """An un-attached pruner for ``config`` over ``total_steps`` training steps."""
    return pruner_class(config.method)(config, total_steps)
