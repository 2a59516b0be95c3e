"""Where a pruned model keeps its weights: remaining % per layer and per matrix type.

Read from a run folder's ``result.json`` (``remaining_by_module``), falling back to counting the
non-zero weights of the saved ``model/`` when the result lacks it. Matrix sizes come from the
safetensors header of ``model/`` (no weights are loaded), so totals are weighted by size; without
the model folder the totals are plain means of the matrices' percentages, and say so.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from movprune import results
from movprune.errors import RunFailedError
from movprune.models import corrupt_model_message

#: Matrix-type columns in display order (QKV: ModernBERT's fused query-key-value projection);
#: anything unrecognised goes to ``OTHER``.
MATRIX_TYPES = ("Q", "K", "V", "QKV", "attention output", "FFN in", "FFN out")
OTHER = "other"

# Module-name endings per type: BERT/RoBERTa/ELECTRA (first), DistilBERT, DeBERTa-v2 (*_proj),
# ModernBERT (Wqkv, Wo, Wi), then other *_proj/fc styles.
_TYPE_SUFFIXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Q", ("attention.self.query", "attention.q_lin", "attention.self.query_proj", "q_proj", "query")),
    ("K", ("attention.self.key", "attention.k_lin", "attention.self.key_proj", "k_proj", "key")),
    ("V", ("attention.self.value", "attention.v_lin", "attention.self.value_proj", "v_proj", "value")),
    ("QKV", ("attn.Wqkv",)),
    ("attention output", ("attention.output.dense", "attention.out_lin", "attn.Wo", "attn.out_proj",
                          "self_attn.out_proj", "attn.o_proj", "attention.o")),
    ("FFN in", ("intermediate.dense", "ffn.lin1", "mlp.Wi", "fc1", "mlp.c_fc")),
    ("FFN out", ("output.dense", "ffn.lin2", "mlp.Wo", "fc2", "mlp.c_proj")),
)
_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)(?:\.|$)")


def matrix_type(module: str) -> str:
    """The matrix type of an encoder Linear from its module name (``OTHER`` when unrecognised)."""
    for kind, suffixes in _TYPE_SUFFIXES:
        if any(module == s or module.endswith("." + s) for s in suffixes):
            return kind
    return OTHER


def layer_index(module: str) -> int | None:
    """The transformer layer a module belongs to (``...layer.3.attention...`` -> 3), else None."""
    match = _LAYER.search(module)
    return int(match.group(1)) if match else None


@dataclass
class Breakdown:
    """Remaining % per layer (rows) and matrix type (columns), with totals.

    ``cells[layer][column]`` is the remaining % of that layer's matrices of that type; ``layer``
    is None for modules outside numbered layers. Totals are weighted by matrix size when
    ``weighted`` is true, else plain means of the matrices' percentages.
    """

    columns: list[str]
    cells: dict[int | None, dict[str, float]]
    layer_totals: dict[int | None, float]
    column_totals: dict[str, float]
    total: float
    weighted: bool
    source: str
    run: dict[str, Any] = field(default_factory=dict)
    #: layer -> {"heads_left", "heads", "neurons_left", "neurons"} when the saved model was read
    structure: dict[int | None, dict[str, int]] = field(default_factory=dict)


def breakdown_dict(b: Breakdown) -> dict[str, Any]:
    """The breakdown as JSON-able data (the table of ``movprune inspect``, for scripts): layers as
    rows (``layer`` null for modules outside numbered layers), remaining % per matrix type."""
    return {
        "run": b.run, "source": b.source, "weighted": b.weighted, "columns": b.columns,
        "layers": [{"layer": layer, "remaining_pct": cells, "total_pct": b.layer_totals[layer]}
                   for layer, cells in b.cells.items()],
        "column_totals_pct": b.column_totals, "total_pct": b.total,
    }


def _combine(items: list[tuple[float, int | None]]) -> float:
    """Remaining % of several matrices together: size-weighted when every size is known."""
    if all(size for _, size in items):
        total = sum(size for _, size in items)
        return sum(pct * size for pct, size in items) / total
    return sum(pct for pct, _ in items) / len(items)


def breakdown(remaining_by_module: dict[str, float], sizes: dict[str, int] | None = None,
              source: str = "", run: dict[str, Any] | None = None) -> Breakdown:
    """Group ``{module name: remaining %}`` by layer and matrix type; ``sizes`` (module name ->
    number of weights) weights the totals."""
    if not remaining_by_module:
        raise RunFailedError(f"{source or 'run'}: no pruned matrices to inspect")
    sizes = sizes or {}
    weighted = all(sizes.get(name) for name in remaining_by_module)
    groups: dict[int | None, dict[str, list[tuple[float, int | None]]]] = {}
    by_layer: dict[int | None, list[tuple[float, int | None]]] = {}
    by_column: dict[str, list[tuple[float, int | None]]] = {}
    everything = []
    for name, pct in remaining_by_module.items():
        item = (float(pct), sizes.get(name) if weighted else None)
        layer, kind = layer_index(name), matrix_type(name)
        groups.setdefault(layer, {}).setdefault(kind, []).append(item)
        by_layer.setdefault(layer, []).append(item)
        by_column.setdefault(kind, []).append(item)
        everything.append(item)
    columns = [k for k in (*MATRIX_TYPES, OTHER) if k in by_column]
    order = sorted(k for k in groups if k is not None) + ([None] if None in groups else [])
    return Breakdown(
        columns=columns,
        cells={layer: {kind: _combine(items) for kind, items in groups[layer].items()} for layer in order},
        layer_totals={layer: _combine(by_layer[layer]) for layer in order},
        column_totals={kind: _combine(by_column[kind]) for kind in columns},
        total=_combine(everything), weighted=weighted, source=source, run=run or {})


def _safetensors_files(model_dir: Path) -> list[Path]:
    return sorted(model_dir.glob("*.safetensors"))


def matrix_sizes(model_dir: Path, modules: list[str]) -> dict[str, int]:
    """Number of weights of each module's ``.weight`` in a saved model, from the safetensors
    headers only. Module names may carry a prefix the saved names lack, or the reverse."""
    from safetensors import safe_open

    shapes: dict[str, int] = {}
    for path in _safetensors_files(model_dir):
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    if key.endswith(".weight"):
                        numel = 1
                        for d in f.get_slice(key).get_shape():
                            numel *= d
                        shapes[key[: -len(".weight")]] = numel
        except (OSError, SafetensorError) as e:
            raise RunFailedError(corrupt_model_message(path, e)) from None
    found = {}
    for module in modules:
        if module in shapes:
            found[module] = shapes[module]
            continue
        match = [k for k in shapes if k.endswith("." + module) or module.endswith("." + k)]
        if len(match) == 1:
            found[module] = shapes[match[0]]
    return found


def remaining_from_model(model_dir: Path) -> dict[str, float]:
    """Remaining % of every encoder Linear of a saved model (loads it on the CPU)."""
    from transformers import AutoModel

    from movprune.pruners.counting import remaining_by_module

    try:
        model = AutoModel.from_pretrained(str(model_dir), trust_remote_code=False)
    except (OSError, ValueError, SafetensorError) as e:
        raise RunFailedError(corrupt_model_message(model_dir, e)) from None
    return remaining_by_module(model)


def structure_from_model(model_dir: Path) -> dict[int | None, dict[str, int]]:
    """Attention heads and FFN neurons left per layer of a saved model (see
    :func:`movprune.pruners.grouping.heads_and_neurons`); empty when the model has no head count."""
    from safetensors import safe_open

    from movprune.pruners.grouping import heads_and_neurons, matrix_role

    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    heads = config.get("num_attention_heads") or config.get("n_heads")
    if not heads:
        return {}
    weights = {}
    for path in _safetensors_files(model_dir):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                if key.endswith(".weight") and matrix_role(key[: -len(".weight")]) is not None:
                    weights[key[: -len(".weight")]] = f.get_tensor(key)
    return {layer_index(prefix + "x"): entry for prefix, entry in heads_and_neurons(weights, heads).items()}


def inspect_run(run_dir: str | Path) -> Breakdown:
    """The remaining-weights breakdown of a run folder (``result.json``, else ``model/``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFailedError(f"{run_dir}: no such run folder")
    model_dir = run_dir / results.MODEL_DIR
    result = results.RunResult.load(run_dir) if (run_dir / results.RESULT_FILE).is_file() else None
    by_module = result.remaining_by_module if result is not None else None
    source = f"{results.RESULT_FILE}"
    if not by_module:
        if not _safetensors_files(model_dir):
            raise RunFailedError(f"{run_dir}: neither {results.RESULT_FILE} with remaining_by_module nor a "
                                 f"saved {results.MODEL_DIR}/ to count from (is the run finished?)")
        by_module = remaining_from_model(model_dir)
        source = f"{results.MODEL_DIR}/"
    sizes = matrix_sizes(model_dir, list(by_module)) if _safetensors_files(model_dir) else {}
    run: dict[str, Any] = {"name": run_dir.name}
    if result is not None:
        run.update({k: getattr(result, k) for k in ("name", "task", "model", "pruner", "target_remaining_pct",
                                                     "remaining_pct")})
        run["name"] = result.name or run_dir.name
    found = breakdown(by_module, sizes, source=source, run=run)
    if _safetensors_files(model_dir):
        found.structure = structure_from_model(model_dir)
    return found
