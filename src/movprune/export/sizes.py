"""What an export folder is and what it weighs: its format, bytes on disk by part (embeddings,
encoder, head, the rest) and the parameters it stores, read from its files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from movprune.errors import ExportError
from movprune.export import sparse
from movprune.export.folders import element_count, folder_bytes, safetensors_header, size_breakdown, tensor_bytes


@dataclass
class FolderStats:
    """Size and parameter count of a model folder, read from its files."""

    encoder_bytes: int | None  # None for ONNX graphs, whose weights lose their names
    total_bytes: int
    parameters: int


def export_format(folder: str | Path) -> str:
    """The format of an export folder (or ``dense`` for any ordinary model folder)."""
    from movprune.export.onnx import ONNX_FILE

    folder = Path(folder)
    if (folder / sparse.SPARSE_CONFIG).is_file():
        return "sparse"
    if (folder / ONNX_FILE).is_file():
        return "onnx"
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ExportError(f"{folder}: not a model folder ({e})") from None
    return "compact" if str(config.get("model_type", "")).startswith("compact_") else "dense"


def sizes_on_disk(folder: str | Path, prefix: str) -> dict[str, int]:
    """Bytes on disk of the folder's embeddings, encoder and head weights, the rest (``other``) and
    the ``total``: the parts add up to the files under the folder."""
    folder = Path(folder)
    if export_format(folder) != "onnx":
        return size_breakdown(folder, prefix)
    from movprune.export.onnx import onnx_weight_bytes

    parts = onnx_weight_bytes(folder, prefix)
    total = folder_bytes(folder)
    return {**parts, "other": total - sum(parts.values()), "total": total}


def folder_stats(folder: str | Path, prefix: str) -> FolderStats:
    """Encoder bytes (tensors named ``prefix…``), total bytes, and parameters stored (values only:
    CSR indices and int8 scales are not parameters)."""
    folder = Path(folder)
    if export_format(folder) == "onnx":
        from movprune.export.onnx import onnx_parameters

        return FolderStats(encoder_bytes=None, total_bytes=folder_bytes(folder), parameters=onnx_parameters(folder))
    params = 0
    for path in folder.glob("*.safetensors"):
        for name, info in safetensors_header(path).items():
            if sparse.is_index_or_scale(name):
                continue
            params += element_count(info)
    return FolderStats(encoder_bytes=tensor_bytes(folder, prefix), total_bytes=folder_bytes(folder),
                       parameters=params)
