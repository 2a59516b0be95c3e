"""Pruning methods. Each method is one module defining a :class:`~movprune.pruners.base.Pruner`
subclass; register it in ``_METHODS`` below. Nothing outside this package branches on a method's
name."""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING

from movprune.pruners.base import Pruner

if TYPE_CHECKING:
    from movprune.experiments.recipe import PrunerConfig, Recipe

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


def check_recipe(recipe: "Recipe") -> list[str]:
    """Problems with the recipe's pruner block, one line each."""
    return check_name(recipe.pruner.method) or pruner_class(recipe.pruner.method).check(recipe.pruner)


def resolve_defaults(recipe: "Recipe") -> "Recipe":
    """Fill the method's defaults into null method-specific keys and clear keys it does not use,
    so the resolved recipe shows exactly what took effect."""
    cls = pruner_class(recipe.pruner.method)
    defaults = cls.defaults_for(recipe.pruner)
    update = {}
    for key in _METHOD_KEYS:
        if key not in cls.DEFAULTS:
            update[key] = None
        elif getattr(recipe.pruner, key) is None and key in defaults:
            update[key] = defaults[key]
    pruner = recipe.pruner.model_copy(update=update)
    return recipe.model_copy(update={"pruner": pruner})


def build_pruner(config: "PrunerConfig", total_steps: int) -> Pruner:
    """An un-attached pruner for ``config`` over ``total_steps`` training steps."""
    return pruner_class(config.method)(config, total_steps)
