"""movprune: movement pruning and its baselines for BERT-family encoders.

``import movprune`` is light: the library API (docs/library.md) is imported on first use of one of
its names (``movprune.attach``, ``movprune.PruningSession``, ``movprune.PruningTrainer``, ...), and
the command line never is.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from movprune.errors import MovpruneError, PruningSessionError, RecipeError
    from movprune.library import (
        PruningCallback,
        PruningSession,
        PruningTrainer,
        attach,
        load_pruner_config,
        with_distillation,
    )

#: Public name -> the module that defines it (imported when the name is first used).
_API = {"attach": "movprune.library", "PruningSession": "movprune.library", "PruningTrainer": "movprune.library",
        "PruningCallback": "movprune.library", "load_pruner_config": "movprune.library",
        "with_distillation": "movprune.library", "PruningSessionError": "movprune.errors",
        "MovpruneError": "movprune.errors", "RecipeError": "movprune.errors"}

__all__ = ["MovpruneError", "PruningCallback", "PruningSession", "PruningSessionError", "PruningTrainer", "RecipeError",
           "__version__", "attach", "load_pruner_config", "with_distillation"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'movprune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
