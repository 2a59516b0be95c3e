"""Pruning inside your own training code (docs/library.md).

:func:`attach` / :class:`PruningSession` drive a pruner from any PyTorch or ``accelerate`` loop;
:class:`~movprune.library.hf.PruningTrainer` is the Hugging Face ``Trainer`` that does it for you
(imported on first use: it imports ``transformers.Trainer``); :func:`with_distillation` is
``movprune run``'s distillation loss. The folder :meth:`PruningSession.save` writes is a run folder
that ``movprune inspect``, ``export`` and ``compare`` read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from movprune.library.distill import with_distillation
from movprune.library.session import PrunerSpec, PruningSession, attach, load_pruner_config

if TYPE_CHECKING:
    from movprune.library.hf import PruningCallback, PruningTrainer

__all__ = ["PrunerSpec", "PruningCallback", "PruningSession", "PruningTrainer", "attach", "load_pruner_config",
           "with_distillation"]


def __getattr__(name: str) -> Any:
    if name in ("PruningTrainer", "PruningCallback"):
        from movprune.library import hf

        return getattr(hf, name)
    raise AttributeError(f"module 'movprune.library' has no attribute {name!r}")
