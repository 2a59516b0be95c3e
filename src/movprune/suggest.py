"""The one "did you mean" helper behind every unknown-name message (keys, tasks, methods)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice most similar to ``word`` (difflib's ratio >= 0.6), or None."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return close[0] if close else None


def did_you_mean(word: str, choices: Iterable[str], listing: str = "choose one of") -> str:
    """A hint for an unknown ``word``: ``did you mean 'x'?``, else ``<listing>: a, b, c``."""
    choices = list(choices)
    match = closest(word, choices)
    return f"did you mean '{match}'?" if match else f"{listing}: {', '.join(choices)}"
