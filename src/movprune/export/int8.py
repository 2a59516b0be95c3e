"""Compact int8 export: the compact model's Linear weights and embedding tables stored as int8
with one fp32 scale per row, in safetensors, loaded back by movprune (plain transformers cannot
load them).

Each quantized matrix ``W`` is stored as ``q = clamp(round(W / s), -127, 127)`` (int8, under its
own name) and ``s`` (fp32, one per row, ``name::scale``) with ``s = max|W[row]| / 127`` (1 for an
all-zero row): symmetric, so a weight moves by at most ``s / 2``. A row is an output row of a
Linear and a token (or position) of an embedding table. Quantized: every ``nn.Linear`` with
weights (the encoder's, the pooler's and the task head's) except one tied to the embeddings, and
every ``nn.Embedding``; LayerNorms and biases stay fp32.

Two runtimes read the same files (:data:`RUNTIMES`): ``dequantize`` (the default) multiplies the
int8 values back into fp32 weights once at load, so the model computes in fp32 with exactly
``q · s``; ``torchao`` keeps the Linear weights int8, as torchao's ``Int8Tensor``, and each Linear
runs an int8 × int8 matmul (``torch._int_mm``) on activations quantized per token at every call
(embedding tables are dequantized at load in both). On the CPU measured (docs/export.md) the eager
torchao path is slower than fp32, so it is opt-in.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from movprune.errors import ExportError
from movprune.export import compact_bert
from movprune.export.compact import MODELING_FILE
from movprune.export.sparse import tied_targets

INT8_WEIGHTS = "int8_model.safetensors"
INT8_CONFIG = "int8_config.json"
FORMAT_NAME = "movprune-compact-int8"
FORMAT_VERSION = 1
SCALE_SUFFIX = "::scale"
#: How a loaded int8 model computes: fp32 on dequantized weights, or torchao's int8 matmuls.
RUNTIMES = ("dequantize", "torchao")
#: How each runtime computes, in words (the ``--eval`` record).
RUNTIME_TEXT = {"dequantize": "int8 weights dequantized to fp32 at load",
                "torchao": "torchao int8 x int8 matmuls, activations quantized per token"}


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
    path = Path(folder) / INT8_CONFIG
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ExportError(f"{folder}: not a compact int8 export ({INT8_CONFIG}: {e})") from None
    if manifest.get("format") != FORMAT_NAME or manifest.get("version") != FORMAT_VERSION:
        raise ExportError(f"{path}: unsupported format {manifest.get('format')} v{manifest.get('version')}")
    return manifest


def _new_compact(architecture: str, folder: Path) -> nn.Module:
    cls = getattr(compact_bert, architecture, None)
    if cls is None or architecture not in {c for c, _ in compact_bert.COMPACT_CLASSES.values()}:
        raise ExportError(f"{folder}: unknown compact model class {architecture!r} in {INT8_CONFIG}")
    config = cls.config_class.from_pretrained(folder)
    from transformers.initialization import no_init_weights

    with no_init_weights():
        return cls(config)


@contextlib.contextmanager
def _quiet_torchao():
    # Importing torchao on a CPU-only torch logs that its CUDA kernels cannot load, and warns about
    # torch.compile internals; neither concerns the CPU Linear path used here.
    logger = logging.getLogger("torchao")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def require_torchao() -> None:
    """Raise :class:`ExportError` (with the install line) when torchao cannot be imported."""
    try:
        with _quiet_torchao():
            import torchao  # noqa: F401
    except ImportError:
        raise ExportError("the torchao int8 runtime needs torchao: pip install 'movprune[int8]' "
                          "(or load with runtime='dequantize')") from None


def _torchao_weight(q: torch.Tensor, scale: torch.Tensor) -> nn.Parameter:
    """torchao's Int8Tensor for a stored matrix: per-row weight scales as stored, activations
    quantized per token (symmetric) at each call."""
    with _quiet_torchao():
        from torchao.quantization import Int8Tensor
        from torchao.quantization.granularity import PerRow
        from torchao.quantization.quant_primitives import MappingType
        from torchao.quantization.quantize_.workflows.int8.int8_tensor import QuantizeTensorToInt8Kwargs

    act = QuantizeTensorToInt8Kwargs(granularity=PerRow(), mapping_type=MappingType.SYMMETRIC)
    weight = Int8Tensor(q.contiguous(), scale.reshape(-1, 1).contiguous(), [1, q.shape[1]], torch.float32,
                        act_quant_kwargs=act)
    return nn.Parameter(weight, requires_grad=False)


@torch.no_grad()
def load_int8(folder: str | Path, runtime: str = "dequantize") -> nn.Module:
    """Load a compact int8 export as a ready-to-run model (eval mode) computing with ``runtime``
    (:data:`RUNTIMES`)."""
    if runtime not in RUNTIMES:
        raise ExportError(f"int8 runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if runtime == "torchao":
        require_torchao()
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
    if runtime == "torchao":
        for name in manifest["matrices"]:
            model.get_submodule(name).weight = _torchao_weight(*quantized[f"{name}.weight"])
    model.eval()
    model.int8_runtime = runtime
    return model
