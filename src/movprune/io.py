"""Atomic writes: a reader never sees a half-written file or folder, and nothing old is lost early.

Two primitives: :func:`atomic_write_text` for one file, :func:`staged_dir` for a folder (write into
a hidden staging folder beside the target, flush it to disk, then publish it by a rename). Files are
created with the user's umask, like any ``open(..., "w")``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from movprune.errors import ResultExistsError, StorageError


def _unique_sibling(path: Path, kind: str) -> Path:
    """A hidden name beside ``path`` that no other process picks (``.<name>.<kind>-<pid>-<rand>``)."""
    return path.parent / f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (renames, new files) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """Flush every file and folder under ``root`` to disk (before a rename makes them visible)."""
    for here, _, files in os.walk(root):
        for name in files:
            path = os.path.join(here, name)
            if os.path.islink(path):
                continue
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(here)

_STORAGE_FIXES = {
    errno.ENOSPC: "no space left on the device; free some space or set output_dir (or "
                  "MOVPRUNE_CACHE) to another disk",
    errno.EDQUOT: "the disk quota is exceeded; free some space or set output_dir to another disk",
    errno.EROFS: "the file system is read-only; set output_dir to a writable folder",
    errno.EACCES: "permission denied; set output_dir to a folder you can write",
    errno.ENOTDIR: "a part of the path is a file, not a folder; set output_dir or name to a folder path",
    errno.EEXIST: "a file is in the way of a folder; set output_dir or name to another path",
}


def storage_error(e: OSError) -> StorageError | None:
    """The :class:`StorageError` for an ``OSError`` of a full, read-only or unwritable disk, or a
    file in the way of a folder (None for any other error, which stays a bug to report)."""
    fix = _STORAGE_FIXES.get(e.errno)
    if fix is None:
        return None
    where = f" {e.filename}" if e.filename else ""
    return StorageError(f"cannot write{where}: {fix}")


#: How libraries that write through code of their own report a full disk: safetensors (Rust's
#: ``StorageFull``, ``os error 28``), torch.save (``file write failed``).
_FULL_DISK_TEXT = ("No space left on device", "StorageFull", "os error 28", "os error 122", "file write failed")


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Write ``path`` (a file or a folder) in the block: a full, read-only or unwritable disk
    becomes a :class:`StorageError` naming it, however the writing library reports it."""
    try:
        yield
    except StorageError:
        raise
    except OSError as e:
        fix = _STORAGE_FIXES.get(e.errno)
        if fix is None:
            raise
        raise StorageError(f"cannot write {e.filename or path}: {fix}") from None
    except Exception as e:  # safetensors and torch raise their own types for an OS write error
        if not any(text in str(e) for text in _FULL_DISK_TEXT):
            raise
        raise StorageError(f"cannot write {path}: {_STORAGE_FIXES[errno.ENOSPC]}") from None


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a hidden temporary file in the same folder, flushed to disk,
    then ``os.replace``: readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _unique_sibling(path, "tmp")
    try:
        # os.open with 0o666 lets the umask decide the mode, as for any new file (mkstemp forces 0600).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically. NaN and infinities are refused (not JSON)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError, TypeError):  # no renameat2 (not Linux, or an old C library)
        return False
    at_fdcwd = -100
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def publish_dir(staging: str | Path, target: str | Path, *, replace: bool = False) -> None:
    """Make the complete folder ``staging`` appear as ``target`` in one rename, after flushing it.

    ``target`` absent or an empty folder: a plain rename. Otherwise only with ``replace``: the two
    are swapped atomically where the system allows (else the old one is renamed aside first), and
    the old folder is deleted only once the new one is in place. The caller decides whether
    ``target`` may be replaced at all.
    """
    staging, target = Path(staging), Path(target)
    fsync_tree(staging)
    try:
        os.rename(staging, target)  # replaces an empty folder too
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR, errno.ENOTDIR):
            raise
        if not replace:
            raise ResultExistsError(f"{target} exists; not replaced") from None
        if target.is_symlink() or not target.is_dir():
            raise ResultExistsError(f"{target} exists and is not a folder; not replaced") from None
        if _exchange(staging, target):
            old = staging  # after the swap, the staging name holds the old folder
        else:
            old = _unique_sibling(target, "old")
            os.rename(target, old)
            os.rename(staging, target)
        fsync_dir(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(target.parent)


@contextlib.contextmanager
def staged_dir(target: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a new hidden folder beside ``target``; when the block succeeds, publish it as
    ``target`` (:func:`publish_dir`). When the block raises, the staging folder is removed and
    ``target`` is untouched: an interrupted write leaves no half-written ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _unique_sibling(target, "staging")
    staging.mkdir()
    try:
        yield staging
        publish_dir(staging, target, replace=replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
