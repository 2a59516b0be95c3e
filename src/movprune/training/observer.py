"""How the training loop reports progress: an :class:`Observer` (the CLI draws it; the library
never prints)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Observer(Protocol):
    """Receives progress from the loop (the CLI draws it; the library never prints)."""

    def on_phase(self, text: str) -> None: ...
    def on_start(self, total_steps: int, run_dir: Path) -> None: ...
    def on_step(self, step: int, values: dict[str, float]) -> None: ...
    def on_eval(self, step: int, metrics: dict[str, float]) -> None: ...


class SilentObserver:
    """An observer that ignores everything (library and test use)."""

    def on_phase(self, text: str) -> None:
        pass

    def on_start(self, total_steps: int, run_dir: Path) -> None:
        pass

    def on_step(self, step: int, values: dict[str, float]) -> None:
        pass

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        pass


__all__ = ["Observer", "SilentObserver"]
