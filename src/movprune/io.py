"""Atomic file writes: a reader never sees a half-written result."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from movprune.errors import StorageError

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


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
