"""Compact int8 export: the compact model's Linear weights and embedding tables stored as int8
with one fp32 scale per row, in safetensors, loaded back by movprune (plain transformers cannot
load them).

Each quantized matrix ``W`` is stored as ``q = clamp(round(W / s), -127, 127)`` (int8, under its
own name) and ``s`` (fp32, one per row, ``name::scale``) with ``s = max|W[row]| / 127`` (1 for an
all-zero row): symmetric, so a weight moves by at most ``s / 2``. A row is an output row of a
Linear and a token (or position) of an embedding table. Quantized: every ``nn.Linear`` with
weights (the encoder's, the pooler's and the task head's) except one tied to the embeddings, and
every ``nn.Embedding``; LayerNorms and biases stay fp32.

:func:`load_int8` multiplies the int8 values back into fp32 weights once at load, so the model
computes in fp32 with exactly ``q · s``: int8 saves disk, not compute. PyTorch's int8 Linear
kernels were measured on this CPU (``benchmarks/int8_linear_kernels.py``, docs/export.md):
torchao's dynamic int8 matmuls are slower than fp32 in eager mode, and torch.ao's dynamic
quantization is deprecated by torch, so neither is used.

:func:`check_int8` bounds the reloaded model's outputs against the fp32 compact model's
(:data:`INT8_TOLERANCE_OF_SPREAD`), so a wrong quantization or dequantization fails the export.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from movprune.errors import ExportError
from movprune.export import bench, compact_bert
from movprune.export.compact import MODELING_FILE
from movprune.export.folders import read_format_manifest
from movprune.export.sparse import tied_targets

INT8_WEIGHTS = "int8_model.safetensors"
INT8_CONFIG = "int8_config.json"
FORMAT_NAME = "movprune-compact-int8"
FORMAT_VERSION = 1
SCALE_SUFFIX = "::scale"
#: How a loaded int8 model computes, in words (the ``--eval`` record).
RUNTIME_TEXT = "int8 weights dequantized to fp32 at load"
#: Largest max |int8 output - fp32 compact output| an export accepts, as a fraction of the fp32
#: compact output's spread (max - min) on the check batch, per output. int8 rounding moves MiniLM's
#: check-batch logits by 2-3% of their spread (docs/export.md); a wrong scale or row moves them by
#: about the spread itself.
INT8_TOLERANCE_OF_SPREAD = 0.10


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-row int8: ``weight ≈ q * scale[:, None]``, ``scale = max|row| / 127``."""
    weight = weight.detach().float()
    peak = weight.abs().amax(dim=1)
    scale = torch.where(peak > 0, peak / 127.0, torch.ones_like(peak))
    q = torch.clamp(torch.round(weight / scale[:, None]), -127, 127).to(torch.int8)
    return q, scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The fp32 weight an int8 matrix stands for: ``q * scale[:, None]``."""
    return q.float() * scale[:, None]


def int8_linears(model: nn.Module) -> list[str]:
    """Names of the Linear layers an int8 export quantizes: all with weights, none tied to the embeddings."""
    tied = tied_targets(model)
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and m.weight.numel() > 0 and f"{name}.weight" not in tied]


def int8_embeddings(model: nn.Module) -> list[str]:
    """Names of the embedding tables an int8 export quantizes (one scale per token row): all."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Embedding) and m.weight.numel() > 0]


@torch.no_grad()
def save_int8(compact: nn.Module, folder: Path) -> dict[str, Any]:
    """Write a compact model (:func:`movprune.export.compact.compact_model`) to ``folder`` with int8
    Linear weights: the weights, ``int8_config.json``, the config and the modeling file. Returns the
    manifest."""
    folder = Path(folder)
    tied = tied_targets(compact)
    state = {k: v.detach().contiguous().clone() for k, v in compact.state_dict().items() if k not in tied}
    names, tables = int8_linears(compact), int8_embeddings(compact)
    for name in names + tables:
        q, scale = quantize_rows(state[f"{name}.weight"])
        state[f"{name}.weight"], state[f"{name}.weight{SCALE_SUFFIX}"] = q, scale
    save_file(state, str(folder / INT8_WEIGHTS), metadata={"format": "pt"})
    compact.config.save_pretrained(folder)
    # No auto_map: transformers' Auto classes cannot load int8 weights, so they are not pointed at the
    # modeling file (and AutoTokenizer does not ask to run it); the file still defines the architecture.
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.pop("auto_map", None)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    shutil.copyfile(compact_bert.__file__, folder / MODELING_FILE)
    manifest = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "architecture": type(compact).__name__,
                "weights": INT8_WEIGHTS, "scheme": "symmetric int8 per output row, fp32 scale = max|row| / 127",
                "matrices": names, "embeddings": tables}
    (folder / INT8_CONFIG).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def is_int8_folder(folder: str | Path) -> bool:
    """True for a compact int8 export (it holds :data:`INT8_CONFIG`)."""
    return (Path(folder) / INT8_CONFIG).is_file()


def read_manifest(folder: Path) -> dict[str, Any]:
    """``int8_config.json`` of a compact int8 export; :class:`ExportError` if absent or foreign."""
    return read_format_manifest(folder, INT8_CONFIG, "compact int8", FORMAT_NAME, FORMAT_VERSION)


def _new_compact(architecture: str, folder: Path) -> nn.Module:
    cls = getattr(compact_bert, architecture, None)
    if cls is None or architecture not in {c for c, _ in compact_bert.COMPACT_CLASSES.values()}:
        raise ExportError(f"{folder}: unknown compact model class {architecture!r} in {INT8_CONFIG}")
    config = cls.config_class.from_pretrained(folder)
    from transformers.initialization import no_init_weights

    with no_init_weights():
        return cls(config)


@torch.no_grad()
def load_int8(folder: str | Path) -> nn.Module:
    """Load a compact int8 export as a ready-to-run model (eval mode) computing in fp32 on the
    dequantized weights ``q · s``."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    model = _new_compact(manifest["architecture"], folder)
    tensors = load_file(str(folder / manifest["weights"]))
    names = [*manifest["matrices"], *manifest.get("embeddings", [])]
    quantized = {f"{n}.weight": (tensors.pop(f"{n}.weight"), tensors.pop(f"{n}.weight{SCALE_SUFFIX}"))
                 for n in names if f"{n}.weight{SCALE_SUFFIX}" in tensors and f"{n}.weight" in tensors}
    if len(quantized) != len(names):
        raise ExportError(f"{folder}: {manifest['weights']} lacks the int8 values or scales of "
                          f"{sorted(set(f'{n}.weight' for n in names) - set(quantized))[:3]}")
    plain = {**tensors, **{k: dequantize_rows(q, s) for k, (q, s) in quantized.items()}}
    missing, unexpected = model.load_state_dict(plain, strict=False)
    missing = set(missing) - tied_targets(model)
    if unexpected or missing:
        raise ExportError(f"{folder}: weights do not match {manifest['architecture']} "
                          f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model.eval()


def check_int8(compact: nn.Module, loaded: nn.Module, batches: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Compare a reloaded int8 export with the fp32 compact model it was written from, output by
    output on ``batches``: :class:`ExportError` when one differs by more than
    :data:`INT8_TOLERANCE_OF_SPREAD` of its spread (max - min). Returns the worst output's numbers."""
    worst: dict[str, Any] = {}
    for batch in batches:
        a, b = bench.model_outputs(compact, batch), bench.model_outputs(loaded, batch)
        mask = batch.get("attention_mask")
        for key in a:
            x, y = a[key], b[key]
            if key == "last_hidden_state" and mask is not None:  # padding positions are not outputs
                x, y = x[mask.bool()], y[mask.bool()]
            diff, spread = float((x - y).abs().max()), float(x.max() - x.min())
            if not diff <= INT8_TOLERANCE_OF_SPREAD * spread:  # also catches NaN
                raise ExportError(f"the compact int8 export's {key} differ from the fp32 compact model's by "
                                  f"{diff:.3g}, more than {100 * INT8_TOLERANCE_OF_SPREAD:g}% of their spread "
                                  f"({spread:.3g}); nothing was written. Please report this")
            pct = 100 * diff / spread if spread > 0 else 0.0
            if not worst or pct > worst["diff_pct_of_spread"]:
                worst = {"output": key, "max_abs_diff": diff, "spread": spread, "diff_pct_of_spread": pct,
                         "tolerance_pct_of_spread": 100 * INT8_TOLERANCE_OF_SPREAD}
    return worst
