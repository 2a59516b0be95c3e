"""Typed errors raised by the library; ``movprune.cli`` turns them into one-line messages."""

from __future__ import annotations


class MovpruneError(Exception):
    """Base class of every error movprune reports to a user (exit code 2 in the CLI)."""


class RecipeError(MovpruneError):
    """A recipe file or override is invalid. ``problems`` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


class DataError(MovpruneError):
    """A data file or dataset is missing or malformed."""


class ModelError(MovpruneError):
    """A model cannot be resolved or loaded."""


class ResultExistsError(MovpruneError):
    """A finished run would be overwritten."""


class RunFailedError(MovpruneError):
    """A run directory is incomplete or corrupt."""


class ExportError(MovpruneError):
    """A run cannot be exported in the requested format, or an export failed its check."""


class RunLockedError(MovpruneError):
    """Another process is writing the same run folder (it holds the folder's lock)."""


class ForeignFolderError(MovpruneError):
    """A path movprune would write or replace holds something movprune did not create."""


class InvalidResultError(RunFailedError):
    """A ``result.json`` exists but is not a valid result (unreadable, NaN, a wrong-typed field)."""


class DistributedError(MovpruneError):
    """The processes of one multi-process run disagree (batch split, masks)."""


class RunInterrupted(MovpruneError):
    """A run stopped on a signal (SIGTERM, Ctrl-C) after saving a checkpoint it can resume from.

    ``exit_code`` is the shell's convention for the signal (128 + its number: 143, 130)."""

    def __init__(self, message: str, exit_code: int, checkpoint: str | None):
        self.exit_code = exit_code
        self.checkpoint = checkpoint
        super().__init__(message)

    def __reduce__(self):  # a sweep's worker process sends it back to the parent
        return type(self), (str(self), self.exit_code, self.checkpoint)


class TrainingDivergedError(MovpruneError):
    """The training loss or the weights became NaN or infinite; the run wrote no result."""


class StorageError(MovpruneError):
    """A file could not be written: the disk is full, read-only, or not writable."""


class PruningSessionError(MovpruneError):
    """The library API was used out of order: a model attached twice, a model with nothing to prune,
    a training step before ``attach`` or after ``bake``."""
