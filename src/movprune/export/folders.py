"""Export folders: written in a temporary folder and renamed into place; sizes read from the files."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

from movprune.errors import ExportError, ResultExistsError


def check_destination(to: Path, run_dir: Path, force: bool) -> None:
    """Refuse a destination that would destroy the run, or a non-empty folder without ``force``."""
    to, run = to.resolve(), run_dir.resolve()
    if to == run or to in run.parents or run / "model" in (to, *to.parents):
        raise ExportError(f"--to {to}: choose a folder outside the run's own files (not the run folder, "
                          "one above it, or its model/)")
    if to.exists() and not to.is_dir():
        raise ExportError(f"--to {to}: exists and is not a folder")
    if to.is_dir() and any(to.iterdir()) and not force:
        raise ResultExistsError(f"{to} exists and is not empty; pass --force to replace it")


@contextlib.contextmanager
def staged_folder(to: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary folder beside ``to``; on success it replaces ``to`` by a rename.

    An interrupted export leaves at most a hidden ``.<name>.partial-<pid>`` folder, never a
    half-written ``to``. An existing non-empty ``to`` is only replaced with ``force``.
    """
    to = Path(to)
    if to.is_dir() and any(to.iterdir()) and not force:
        raise ResultExistsError(f"{to} exists and is not empty; pass --force to replace it")
    to.parent.mkdir(parents=True, exist_ok=True)
    tmp = to.parent / f".{to.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if to.exists():
        old = to.parent / f".{to.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        to.rename(old)
    tmp.rename(to)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def folder_bytes(folder: Path) -> int:
    """Total size of the files under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def safetensors_header(path: Path) -> dict[str, dict]:
    """The tensor table of a safetensors file (name -> dtype, shape, data_offsets), without loading it."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return header


def tensor_bytes(folder: Path, prefix: str = "") -> int:
    """Bytes of the tensors whose name starts with ``prefix`` in the folder's safetensors files."""
    total = 0
    for path in sorted(Path(folder).glob("*.safetensors")):
        for name, info in safetensors_header(path).items():
            if name.startswith(prefix):
                start, end = info["data_offsets"]
                total += end - start
    return total


def element_count(info: dict) -> int:
    """Number of elements of a safetensors header entry."""
    n = 1
    for d in info["shape"]:
        n *= d
    return n
