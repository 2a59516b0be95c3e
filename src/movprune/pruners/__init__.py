"""Pruning methods. Each method is one module defining a :class:`~movprune.pruners.base.Pruner`
subclass and a config class in :mod:`movprune.pruners.config` that names it (``IMPLEMENTATION``)
and is listed in the union :data:`PrunerConfig`: that is its one registration. Nothing outside
this package branches on a method's name."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from movprune.pruners.config import CONFIGS, BasePrunerConfig, PrunerConfig, methods_taking, pruner_config
from movprune.suggest import did_you_mean

if TYPE_CHECKING:  # the pruner classes import torch: loaded on first use (pruner_class), not here
    from movprune.models import ResolvedModel
    from movprune.pruners.base import Pruner

# method name -> "module:class", from each method's config class (its one registration).
_METHODS = {method: config.IMPLEMENTATION for method, config in CONFIGS.items()}

__all__ = ["BasePrunerConfig", "PrunerConfig", "base_method", "build_pruner", "check_budget", "check_config",
           "check_inputs",
           "check_name", "method_names", "methods_taking", "pruner_class", "pruner_config", "variant_label"]


def variant_label(method: str, config: dict | None) -> str:
    """A run's method with the remedies it had on (``movement+magnitude_init+bias_correction``), so
    that tables keep runs with and without a remedy apart. ``config`` is ``result.json``'s
    ``pruner_config``; older runs without the keys are the plain method."""
    config = config or {}
    parts = [method]
    if config.get("scores_init_from") not in (None, "constant"):
        parts.append(f"{config['scores_init_from']}_init")
    if config.get("bias_correction"):
        parts.append("bias_correction")
    return "+".join(parts)


def base_method(label: str) -> str:
    """The method of a :func:`variant_label`."""
    return label.split("+")[0]


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
        return [f"pruner.method: unknown pruning method '{method}' ({did_you_mean(method, _METHODS)})"]
    return []


def check_config(config: BasePrunerConfig) -> list[str]:
    """Problems with a recipe's ``pruner:`` section, one line each."""
    problems = check_name(config.method) or pruner_class(config.method).check(config)
    if not problems and config.pattern != "unstructured" and not pruner_class(config.method).supports_patterns():
        able = [m for m in _METHODS if pruner_class(m).supports_patterns()]
        problems.append(f"pruner.pattern: method '{config.method}' has no masks to shape; pattern "
                        f"'{config.pattern}' applies to {', '.join(able)}")
    return problems


def check_inputs(config: BasePrunerConfig, model: ResolvedModel) -> list[str]:
    """Problems with the files ``config``'s method reads, for a run about to train ``model``."""
    return pruner_class(config.method).input_problems(config, model)


def check_budget(config: BasePrunerConfig, max_steps: int | None) -> list[str]:
    """Problems with running ``config``'s method for ``max_steps`` training steps (0: no training)."""
    return pruner_class(config.method).check_budget(config, max_steps)


def build_pruner(config: BasePrunerConfig, total_steps: int) -> Pruner:
    """An un-attached pruner for ``config`` over ``total_steps`` training steps."""
    return pruner_class(config.method)(config, total_steps)
