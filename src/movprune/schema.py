"""The base of every recipe section: strict pydantic models (an unknown key is an error)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A recipe section: unknown keys are refused and assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @classmethod
    def unknown_key_problem(cls, key: str) -> str | None:
        """What to say of ``key``, not a key of this section, when "unknown key" would mislead (e.g. a
        key of another pruning method); None for a plain unknown key."""
        return None
