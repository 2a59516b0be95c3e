"""Sparse export: pruned matrices stored in CSR (optionally int8 values), run with sparse kernels
where they were measured to be faster.

Whether torch's CSR kernel beats the dense one depends on the matrix shape, its sparsity, the
number of token rows in a call and the CPU; so it is not assumed but timed, per matrix, for a grid
of row counts (:data:`ROWS_GRID`). The result, ``sparse_max_rows``, is recorded in
``sparse_config.json``: calls with at most that many rows use the CSR kernel, larger ones the dense
kernel (the dense weight is materialised from the CSR values on first use).
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from movprune.errors import ExportError
from movprune.export.folders import read_format_manifest
from movprune.pruners.counting import prunable_linears

SPARSE_WEIGHTS = "sparse_model.safetensors"
SPARSE_CONFIG = "sparse_config.json"
FORMAT_NAME = "movprune-sparse"
FORMAT_VERSION = 1
#: Token rows per call (batch size x sequence length) at which the two kernels are timed.
ROWS_GRID = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
#: Timed calls per kernel and row count; the minimum is kept, since other processes only add time.
CALIBRATION_REPEATS = 5
_SEP = "::"


@contextlib.contextmanager
def _quiet_sparse_warnings():
    # torch warns that CSR support is "beta" and that invariant checks are off; both are expected here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        warnings.filterwarnings("ignore", message="Sparse invariant checks")
        yield


def is_index_or_scale(name: str) -> bool:
    """True for the tensors of a sparse export that are not weight values (CSR indices, scales)."""
    return _SEP in name and not name.endswith(_SEP + "values")


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Symmetric per-matrix int8: ``weight ≈ q * scale`` with ``scale = max|weight| / 127``."""
    weight = weight.detach()
    peak = float(weight.abs().max())
    scale = peak / 127.0 if peak > 0 else 1.0
    q = torch.clamp(torch.round(weight / scale), -127, 127).to(torch.int8)
    return q, scale


class SparseLinear(nn.Module):
    """``nn.Linear`` with a CSR weight; uses the CSR kernel for calls of at most ``sparse_max_rows``
    token rows and the dense kernel (weight densified once, on first use) for larger ones."""

    def __init__(self, weight_csr: torch.Tensor, bias: torch.Tensor | None, sparse_max_rows: int):
        super().__init__()
        self.out_features, self.in_features = weight_csr.shape
        self.register_buffer("weight_csr", weight_csr, persistent=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.sparse_max_rows = sparse_max_rows
        self._dense: torch.Tensor | None = None

    def dense_weight(self) -> torch.Tensor:
        """The weight as a dense matrix (materialised once)."""
        if self._dense is None:
            self._dense = self.weight_csr.to_dense()
        return self._dense

    def forward_sparse(self, x: torch.Tensor) -> torch.Tensor:
        """``x W^T + b`` with the CSR kernel."""
        x2 = x.reshape(-1, self.in_features)
        y = torch.sparse.mm(self.weight_csr, x2.t()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.contiguous().reshape(*x.shape[:-1], self.out_features)

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        """``x W^T + b`` with the dense kernel."""
        return nn.functional.linear(x, self.dense_weight(), self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        return self.forward_sparse(x) if rows <= self.sparse_max_rows else self.forward_dense(x)

    def extra_repr(self) -> str:
        nnz = self.weight_csr.values().numel()
        return (f"in_features={self.in_features}, out_features={self.out_features}, nnz={nnz}, "
                f"sparse_max_rows={self.sparse_max_rows}")


def choose_sparse_max_rows(timings: list[tuple[int, float, float]]) -> int:
    """From ``(rows, dense_ms, sparse_ms)`` in increasing rows: the largest row count up to which the
    sparse kernel was faster at every measured point (0 when it lost at the first)."""
    best = 0
    for rows, dense_ms, sparse_ms in timings:
        if sparse_ms >= dense_ms:
            break
        best = rows
    return best


@torch.inference_mode()
def calibrate(layer: SparseLinear, grid: tuple[int, ...] = ROWS_GRID,
              repeats: int = CALIBRATION_REPEATS) -> dict[str, Any]:
    """Time both kernels of ``layer`` on random inputs for each row count of ``grid`` (interleaved,
    minimum of ``repeats``), from the smallest up, stopping at the first row count where the dense
    kernel is as fast. Sets and returns ``sparse_max_rows`` with the timings."""
    gen = torch.Generator().manual_seed(0)
    timings: list[tuple[int, float, float]] = []
    for rows in grid:
        x = torch.randn(rows, layer.in_features, generator=gen)
        ms: dict[str, list[float]] = {"dense": [], "sparse": []}
        layer.forward_dense(x), layer.forward_sparse(x)  # warm-up
        for _ in range(repeats):
            for kind, fn in (("dense", layer.forward_dense), ("sparse", layer.forward_sparse)):
                t0 = time.perf_counter()
                fn(x)
                ms[kind].append(1e3 * (time.perf_counter() - t0))
        timings.append((rows, min(ms["dense"]), min(ms["sparse"])))
        if timings[-1][2] >= timings[-1][1]:
            break
    layer.sparse_max_rows = choose_sparse_max_rows(timings)
    return {"sparse_max_rows": layer.sparse_max_rows,
            "timings": {str(r): {"dense_ms": d, "sparse_ms": s} for r, d, s in timings}}


def _index_dtype(limit: int) -> torch.dtype:
    return torch.int16 if limit <= torch.iinfo(torch.int16).max else torch.int32


def _csr_bytes(nnz: int, rows: int, cols: int, value_bytes: int) -> int:
    return nnz * (value_bytes + (2 if _index_dtype(cols) == torch.int16 else 4)) + (rows + 1) * 4


def tied_targets(model: nn.Module) -> set[str]:
    """Names of the weights that are tied to (and saved as) another weight."""
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    return set(tied)


@torch.no_grad()
def save_sparse(model: nn.Module, folder: Path, *, int8: bool = False,
                measure: bool = True) -> dict[str, Any]:
    """Write ``model`` to ``folder`` in the sparse format (weights and ``sparse_config.json``).

    Each pruned matrix is stored in CSR when that is smaller than dense (always, unless it is dense
    enough), with int8 values and a per-matrix scale when ``int8``. With ``measure``, each CSR
    matrix's kernel choice is timed on this machine (see :func:`calibrate`). Returns the manifest.
    """
    folder = Path(folder)
    state = {k: v for k, v in model.state_dict().items() if k not in tied_targets(model)}
    tensors: dict[str, torch.Tensor] = {}
    matrices: dict[str, dict[str, Any]] = {}
    value_bytes = 1 if int8 else 4
    for name in prunable_linears(model):
        key = f"{name}.weight"
        w = state.pop(key).float()
        q, scale = quantize_int8(w) if int8 else (w, None)
        nnz = int(torch.count_nonzero(q))
        out_f, in_f = w.shape
        csr = _csr_bytes(nnz, out_f, in_f, value_bytes) < w.numel() * value_bytes
        entry: dict[str, Any] = {"storage": "csr" if csr else "dense", "shape": [out_f, in_f], "nnz": nnz,
                                 "dtype": "int8" if int8 else "float32"}
        if csr:
            with _quiet_sparse_warnings():
                sp = q.to_sparse_csr()
            tensors[key + _SEP + "crow_indices"] = sp.crow_indices().to(torch.int32)
            tensors[key + _SEP + "col_indices"] = sp.col_indices().to(_index_dtype(in_f))
            tensors[key + _SEP + "values"] = sp.values().contiguous()
        else:
            tensors[key + _SEP + "values"] = q.contiguous()
        if int8:
            tensors[key + _SEP + "scale"] = torch.tensor([scale], dtype=torch.float32)
        matrices[key] = entry
    for k, v in state.items():
        tensors[k] = v.detach().contiguous().clone()
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "architecture": type(model).__name__,
        "int8": int8, "matrices": matrices, "calibration": None,
    }
    save_file(tensors, str(folder / SPARSE_WEIGHTS), metadata={"format": "pt"})
    model.config.save_pretrained(folder)
    if measure:
        loaded = load_sparse(folder, manifest=manifest)
        manifest["calibration"] = calibrate_model(loaded)
        for key, choice in manifest["calibration"]["matrices"].items():
            matrices[key]["sparse_max_rows"] = choice["sparse_max_rows"]
    (folder / SPARSE_CONFIG).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def sparse_layers(model: nn.Module) -> dict[str, SparseLinear]:
    """The :class:`SparseLinear` modules of a loaded sparse model, by weight name."""
    return {f"{n}.weight": m for n, m in model.named_modules() if isinstance(m, SparseLinear)}


def calibrate_model(model: nn.Module, grid: tuple[int, ...] = ROWS_GRID,
                    repeats: int = CALIBRATION_REPEATS) -> dict[str, Any]:
    """:func:`calibrate` every CSR matrix of a loaded sparse model; returns the choices and timings."""
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "rows_grid": list(grid),
            "repeats": repeats, "statistic": "min",
            "matrices": {k: calibrate(layer, grid, repeats) for k, layer in sparse_layers(model).items()}}


def _new_model(architecture: str, folder: Path) -> nn.Module:
    import transformers
    from transformers import AutoConfig

    cls = getattr(transformers, architecture, None)
    if cls is None:
        raise ExportError(f"{folder}: unknown model class {architecture} in {SPARSE_CONFIG}")
    config = AutoConfig.from_pretrained(folder)
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # only a speed-up: every weight is overwritten below
        import contextlib

        no_init_weights = contextlib.nullcontext
    with no_init_weights():
        return cls(config)


def read_manifest(folder: Path) -> dict[str, Any]:
    """``sparse_config.json`` of a sparse export; raises :class:`ExportError` if absent or foreign."""
    return read_format_manifest(folder, SPARSE_CONFIG, "sparse", FORMAT_NAME, FORMAT_VERSION)


@torch.no_grad()
def load_sparse(path: str | Path, *, calibrate: bool = False,
                manifest: dict[str, Any] | None = None) -> nn.Module:
    """Load a sparse export as a ready-to-run model (eval mode).

    CSR matrices become :class:`SparseLinear` layers using the kernel choices recorded at export;
    ``calibrate=True`` times the kernels again on this machine instead.
    """
    folder = Path(path)
    manifest = manifest or read_manifest(folder)
    model = _new_model(manifest["architecture"], folder)
    tensors = load_file(str(folder / SPARSE_WEIGHTS))
    plain = {k: v for k, v in tensors.items() if _SEP not in k}
    missing, unexpected = model.load_state_dict(plain, strict=False)
    expected_missing = set(manifest["matrices"]) | tied_targets(model)
    if unexpected or not set(missing) <= expected_missing:
        raise ExportError(f"{folder}: weights do not match {manifest['architecture']} "
                          f"(missing {sorted(set(missing) - expected_missing)[:5]}, "
                          f"unexpected {sorted(unexpected)[:5]})")
    for key, entry in manifest["matrices"].items():
        module_name = key.removesuffix(".weight")
        layer = model.get_submodule(module_name)
        values = tensors[key + _SEP + "values"]
        if entry["dtype"] == "int8":
            values = values.float() * tensors[key + _SEP + "scale"]
        if entry["storage"] == "dense":
            layer.weight.copy_(values.reshape(layer.weight.shape))
            continue
        with _quiet_sparse_warnings():
            csr = torch.sparse_csr_tensor(tensors[key + _SEP + "crow_indices"].long(),
                                          tensors[key + _SEP + "col_indices"].long(), values.float(),
                                          size=tuple(entry["shape"]))
        bias = None if layer.bias is None else layer.bias.detach().clone()
        parent_name, _, child = module_name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, SparseLinear(csr, bias, int(entry.get("sparse_max_rows", 0))))
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    model.eval()
    if calibrate:
        calibrate_model(model)
    return model
