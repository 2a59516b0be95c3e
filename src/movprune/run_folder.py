"""A run folder's life: a safe name, a lock, movprune's ownership marker, and publishing.

Guarantees (docs/results-folder.md states them to users):

- A run name is one path component (:func:`check_run_name`): a run never writes outside its
  ``output_dir``.
- One process at a time writes ``<output_dir>/<name>``: it holds ``<output_dir>/.<name>.lock``
  (``filelock``); its pid and host are in ``.<name>.lock.holder`` so that others can say who.
- movprune deletes only folders holding its marker file (:data:`MARKER_FILE`, written when it
  creates a run folder) and no ``result.json``: its own unfinished runs. Anything else at a run's
  path is refused, never removed.
- A finished run is replaced only with ``force``, and then only once the new run has finished: the
  new run trains in a hidden staging folder beside it (``.<name>.staging``) that is swapped in
  when complete. A forced run that fails or is killed leaves the old run as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from movprune.errors import ForeignFolderError, InvalidResultError, ResultExistsError, RunFailedError, RunLockedError
from movprune.io import atomic_write_text, fsync_tree, publish_dir
from movprune.results import RESULT_FILE, RunResult

#: Written into every run folder movprune creates: "this folder is movprune's own run".
MARKER_FILE = ".movprune-run"
MAX_NAME_LENGTH = 128
_NAME = re.compile(r"[A-Za-z0-9._+=-]+")


def check_run_name(name: str) -> str | None:
    """Why ``name`` cannot name a run folder, or None when it can: letters, digits and ``._-+=``,
    at most :data:`MAX_NAME_LENGTH` characters, not starting with ``.`` (so not ``.`` or ``..``;
    hidden names are movprune's own staging and lock files)."""
    if not name:
        return "a run name cannot be empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"a run name has at most {MAX_NAME_LENGTH} characters (this one has {len(name)})"
    if name.startswith("."):
        return "a run name cannot start with '.' ('.' and '..' are not folders of their own)"
    if not _NAME.fullmatch(name):
        bad = sorted({c for c in name if not _NAME.fullmatch(c)})
        return (f"a run name is one folder name of letters, digits and . _ - + = (this one has "
                f"{' '.join(repr(c) for c in bad)}); use output_dir to choose the parent folder")
    return None


def lock_path(run_dir: Path) -> Path:
    """``<output_dir>/.<name>.lock``: beside the run folder, so it survives the folder's swap."""
    return run_dir.parent / f".{run_dir.name}.lock"


def holder_path(run_dir: Path) -> Path:
    """``<output_dir>/.<name>.lock.holder``: who holds the lock (pid, host, since when)."""
    return run_dir.parent / f".{run_dir.name}.lock.holder"


def staging_path(run_dir: Path) -> Path:
    """``<output_dir>/.<name>.staging``: where a forced re-run trains (one name: the lock is held)."""
    return run_dir.parent / f".{run_dir.name}.staging"


def unfinished_staging(run_dir: str | Path) -> bool:
    """True when a forced re-run of ``run_dir`` was stopped before it replaced the finished run:
    its staging folder is movprune's and holds no result yet."""
    staging = staging_path(Path(run_dir))
    return is_movprune_run(staging) and not (staging / RESULT_FILE).exists()


def is_movprune_run(path: Path) -> bool:
    """True when ``path`` is a folder movprune created as a run (its marker file is there)."""
    return (path / MARKER_FILE).is_file() and not path.is_symlink()


def _holder_text(run_dir: Path) -> str:
    try:
        info = json.loads(holder_path(run_dir).read_text(encoding="utf-8"))
        return f"process {info['pid']} on {info['host']} (since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold the run folder's lock, or raise :class:`RunLockedError` naming the holder at once."""
    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ForeignFolderError(f"output_dir {run_dir.parent}: exists and is not a folder") from None
    lock = FileLock(lock_path(run_dir))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunLockedError(
            f"{run_dir} is being written by {_holder_text(run_dir)}; wait for it to finish, or set "
            "name=<other> to run beside it") from None
    try:
        atomic_write_text(holder_path(run_dir), json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}) + "\n")
        yield
    finally:
        holder_path(run_dir).unlink(missing_ok=True)
        lock.release()


def _mark(folder: Path) -> None:
    folder.mkdir()
    atomic_write_text(folder / MARKER_FILE, "This folder is a movprune run; movprune may replace it "
                                            "while it has no result.json.\n")


def _remove_own(folder: Path) -> None:
    """Delete ``folder`` if it is movprune's unfinished run; refuse anything else."""
    if not is_movprune_run(folder):
        raise ForeignFolderError(
            f"{folder} exists and was not created by movprune (no {MARKER_FILE} marker); movprune never "
            "deletes it: move it away, or set name=<other> / output_dir=<other>")
    if (folder / RESULT_FILE).exists():
        raise ResultExistsError(f"{folder} holds a {RESULT_FILE}; not deleted")
    shutil.rmtree(folder)


@dataclass
class RunFolder:
    """Where a run writes (``path``) and where it is published (``final``)."""

    final: Path
    path: Path

    @property
    def staged(self) -> bool:
        """True when the run trains beside a finished run it will replace."""
        return self.path != self.final

    def publish(self) -> None:
        """Make the finished run visible at ``final`` (call after writing ``result.json``): a
        staged run is flushed and swapped in, and the replaced run deleted only then."""
        if self.staged:
            publish_dir(self.path, self.final, replace=True)
        else:
            fsync_tree(self.final)


def _finished_and_ours(run_dir: Path) -> bool:
    """A finished run movprune may replace with ``force``: marked, or a valid result (older runs
    had no marker; their ``result.json`` is movprune's signature)."""
    if is_movprune_run(run_dir):
        return True
    try:
        RunResult.load(run_dir)
    except (InvalidResultError, RunFailedError):
        return False
    return True


def prepare(run_dir: str | Path, force: bool, resume: bool = False) -> RunFolder:
    """Create the folder a run writes into (the caller holds :func:`run_lock`).

    - ``resume`` (the caller found a checkpoint in it): movprune's unfinished run is kept as it is;
      with ``force`` too, an interrupted forced re-run's staging folder is kept and written on;
    - nothing there, or an empty folder: the run writes there;
    - movprune's unfinished run (marker, no ``result.json``): cleared, then as above;
    - a finished run: :class:`ResultExistsError` without ``force``; with it, the run writes into a
      staging folder that replaces the old run only when :meth:`RunFolder.publish` is called;
    - anything else (a file, a folder movprune did not create): :class:`ForeignFolderError`.
    """
    run_dir = Path(run_dir)
    staging = staging_path(run_dir)
    if resume and force and unfinished_staging(run_dir) and (run_dir / RESULT_FILE).exists():
        return RunFolder(final=run_dir, path=staging)  # continue the interrupted forced re-run
    if staging.exists() or staging.is_symlink():
        # Left by a forced run that was killed before its swap (never published; the run it was to
        # replace is intact). Ours when marked, finished or not; we hold the lock.
        if not is_movprune_run(staging):
            raise ForeignFolderError(f"{staging} exists and was not created by movprune; movprune never "
                                     "deletes it: move it away")
        shutil.rmtree(staging)
    if run_dir.is_symlink() or (run_dir.exists() and not run_dir.is_dir()):
        raise ForeignFolderError(f"{run_dir} exists and is not a folder; movprune never replaces it: "
                                 "set name=<other> / output_dir=<other>")
    if resume and is_movprune_run(run_dir) and not (run_dir / RESULT_FILE).exists():
        return RunFolder(final=run_dir, path=run_dir)
    if (run_dir / RESULT_FILE).exists():
        if not force:
            try:
                RunResult.load(run_dir)
                what = f"a finished run ({RESULT_FILE})"
            except RunFailedError as e:
                what = f"an invalid {RESULT_FILE} ({e})"
            raise ResultExistsError(
                f"{run_dir} already holds {what}; pass --force to replace it once the new run has "
                "finished, or set name=<other> to keep both")
        if not _finished_and_ours(run_dir):
            raise ForeignFolderError(
                f"{run_dir} has a {RESULT_FILE} that movprune cannot read and no {MARKER_FILE} marker; "
                "movprune never replaces it, --force or not: move it away or set name=<other>")
        _mark(staging)
        return RunFolder(final=run_dir, path=staging)
    if run_dir.is_dir():
        if any(run_dir.iterdir()):
            _remove_own(run_dir)
        else:
            run_dir.rmdir()
    _mark(run_dir)
    return RunFolder(final=run_dir, path=run_dir)


def worker_folder(run_dir: str | Path) -> RunFolder:
    """The folder of a run prepared by the main process (other processes of a multi-process run;
    call after the main process has prepared it)."""
    run_dir = Path(run_dir)
    staging = staging_path(run_dir)
    return RunFolder(final=run_dir, path=staging if is_movprune_run(staging) else run_dir)


@contextlib.contextmanager
def claim(run_dir: str | Path, force: bool, resume: bool = False) -> Iterator[RunFolder]:
    """Lock and prepare ``run_dir`` for a run (:func:`run_lock`, :func:`prepare`) for the block.
    Only the main process of a multi-process run claims; the others use :func:`worker_folder`."""
    with run_lock(run_dir):
        yield prepare(run_dir, force, resume)
