"""Export folders: written in a staging folder and published by a rename; sizes read from the files.

``movprune export`` writes only into a new or empty folder, or over an export it made itself
(one holding :data:`EXPORT_INFO`, with ``--force``): never into or over a run folder, nor any
other folder it did not create.
"""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from movprune.errors import ExportError, ForeignFolderError, ResultExistsError
from movprune.io import staged_dir
from movprune.results import METRICS_FILE, RECIPE_FILE, RESULT_FILE
from movprune.run_folder import MARKER_FILE

#: Written into every export: its format, source run and check against the dense model. Its
#: presence is what marks a folder as an export movprune made (and may replace with ``--force``).
EXPORT_INFO = "movprune_export.json"


def read_format_manifest(folder: Path, filename: str, kind: str, format_name: str, version: int) -> dict[str, Any]:
    """``folder/filename``, the manifest of a ``kind`` export (e.g. ``sparse``) in format
    ``format_name`` version ``version``; :class:`ExportError` if it is absent, unreadable or foreign."""
    path = Path(folder) / filename
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ExportError(f"{folder}: not a {kind} export ({filename}: {e})") from None
    if manifest.get("format") != format_name or manifest.get("version") != version:
        raise ExportError(f"{path}: unsupported format {manifest.get('format')} v{manifest.get('version')}")
    return manifest


def is_run_folder(folder: Path) -> bool:
    """True when ``folder`` is (or looks like) a movprune run folder, finished or not."""
    return ((folder / MARKER_FILE).is_file() or (folder / RESULT_FILE).is_file()
            or ((folder / RECIPE_FILE).is_file() and (folder / METRICS_FILE).is_file()))


def is_export_folder(folder: Path) -> bool:
    """True when ``folder`` is an export movprune wrote (it holds :data:`EXPORT_INFO`)."""
    return (folder / EXPORT_INFO).is_file() and not is_run_folder(folder)


def _check_replaceable(to: Path, force: bool) -> None:
    if to.is_symlink() or (to.exists() and not to.is_dir()):
        raise ExportError(f"--to {to}: exists and is not a folder")
    if to.is_dir() and any(to.iterdir()):
        if not is_export_folder(to):
            raise ForeignFolderError(
                f"--to {to}: a non-empty folder that is not an export movprune made (no {EXPORT_INFO}); "
                "export never writes into or replaces it, --force or not: choose a new or empty folder")
        if not force:
            raise ResultExistsError(f"{to} holds an earlier export; pass --force to replace it")

def check_destination(to: Path, run_dir: Path, force: bool) -> None:
    """Refuse a destination inside or above a run folder, or one export may not replace."""
    to_abs, run = Path(to).resolve(), Path(run_dir).resolve()
    if to_abs == run or to_abs in run.parents:
        raise ExportError(f"--to {to}: choose a folder outside the run's own files (not the run folder "
                          "or one above it)")
    inside = next((p for p in (to_abs, *to_abs.parents) if is_run_folder(p)), None)
    if inside is not None:
        raise ForeignFolderError(f"--to {to}: {'is' if inside == to_abs else 'is inside'} the run folder "
                                 f"{inside}; export never writes into or over a run: choose a folder "
                                 "outside it")
    _check_replaceable(Path(to), force)


@contextlib.contextmanager
def staged_folder(to: Path, force: bool) -> Iterator[Path]:
    """Yield a hidden staging folder beside ``to``; on success it is published as ``to``
    (:func:`movprune.io.staged_dir`), replacing an earlier export only with ``force``. An interrupted
    or failed export leaves ``to`` as it was and no staging folder."""
    to = Path(to)
    _check_replaceable(to, force)
    with staged_dir(to, replace=force) as tmp:
        yield tmp


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


#: The parts of a model's bytes on disk: ``other`` is every byte not in a weight of the three
#: (config, tokenizer, model card, file headers, graph structure), so the parts add up to ``total``.
SIZE_PARTS = ("embeddings", "encoder", "head", "other")


def weight_part(name: str, encoder_prefix: str) -> str:
    """``embeddings``, ``encoder`` or ``head`` for a weight (tensor or ONNX initializer) name."""
    dotted = "." + name.replace("/", ".")
    if ".embeddings." in dotted:
        return "embeddings"
    if name.startswith(encoder_prefix) or ".encoder." in dotted:
        return "encoder"
    return "head"


def size_breakdown(folder: Path, encoder_prefix: str) -> dict[str, int]:
    """Bytes on disk of the embeddings, encoder and head weights stored in the folder's safetensors
    files, of everything else (``other``) and the ``total`` (the files under ``folder``)."""
    parts = dict.fromkeys(SIZE_PARTS, 0)
    for path in sorted(Path(folder).glob("*.safetensors")):
        for name, info in safetensors_header(path).items():
            start, end = info["data_offsets"]
            parts[weight_part(name, encoder_prefix)] += end - start
    total = folder_bytes(folder)
    parts["other"] = total - sum(parts.values())
    return {**parts, "total": total}


def element_count(info: dict) -> int:
    """Number of elements of a safetensors header entry."""
    n = 1
    for d in info["shape"]:
        n *= d
    return n
