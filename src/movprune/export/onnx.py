"""ONNX export: the run's model (dense, or compact with its emptied heads and neurons removed) as one
``model.onnx`` file for ONNX Runtime, with dynamic batch and sequence axes.

Needs the ``onnx`` extra (``pip install 'movprune[onnx]'``: onnx, onnxruntime). The graph is
traced by torch's TorchScript exporter: it handles the compact model's per-layer widths, including
a layer with no head or no neuron left, and exports a small model in seconds.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from movprune.errors import ExportError

ONNX_FILE = "model.onnx"
#: Written beside the graph: its input and output names (the tokenizer's names) and the source.
ONNX_CONFIG = "onnx_config.json"
OPSET = 18


def require_onnxruntime():
    """The ``onnxruntime`` module, or an :class:`ExportError` saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("--format onnx needs onnxruntime: pip install 'movprune[onnx]' "
                          "(or pip install onnx onnxruntime)") from None
    return onnxruntime


def _input_names(model: nn.Module, batch: dict[str, torch.Tensor]) -> list[str]:
    # RoBERTa-style models have a single token type: feeding zeros is what they expect anyway, but
    # a graph without the input is simpler to serve.
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in batch and getattr(model.config, "type_vocab_size", 2) > 1:
        names.append("token_type_ids")
    return names


def save_onnx(model: nn.Module, folder: Path, example: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    """Trace ``model`` (eval mode) on ``example`` into ``folder/model.onnx``; returns the graph's
    description (also written to ``onnx_config.json``)."""
    require_onnxruntime()
    names = _input_names(model, example)
    inputs = {k: example[k] for k in names}
    with torch.no_grad():
        outputs = [k for k, v in model(**inputs).items() if isinstance(v, torch.Tensor)]
    axes = {k: {0: "batch", 1: "sequence"} for k in names}
    for k in outputs:
        axes[k] = {0: "batch", 1: "sequence"} if k in ("start_logits", "end_logits", "last_hidden_state") \
            else {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings: the check below decides
        torch.onnx.export(model, (), str(folder / ONNX_FILE), kwargs=inputs, input_names=names,
                          output_names=outputs, dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    # An input the traced model never reads is not in the graph: attention_mask, when every layer
    # lost all its attention heads (nothing attends, so nothing is masked).
    import onnx

    graph = onnx.load(str(folder / ONNX_FILE), load_external_data=False).graph
    in_graph = {i.name for i in graph.input}
    info = {"inputs": [k for k in names if k in in_graph], "outputs": outputs, "opset": OPSET, "source": source}
    (folder / ONNX_CONFIG).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


class OnnxModel:
    """An ONNX Runtime session called like a transformers model: ``model(**batch)`` returns a dict
    of torch tensors (``logits``...). CPU execution; ``threads`` intra-op threads (0: ORT's default)."""

    def __init__(self, folder: str | Path, threads: int = 0):
        ort = require_onnxruntime()
        folder = Path(folder)
        info = json.loads((folder / ONNX_CONFIG).read_text(encoding="utf-8"))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(folder / ONNX_FILE), options, providers=["CPUExecutionProvider"])
        self.inputs, self.outputs = info["inputs"], info["outputs"]
        self.config = _config(folder)

    def __call__(self, **batch: torch.Tensor) -> dict[str, torch.Tensor]:
        feed = {k: batch[k].cpu().numpy() for k in self.inputs}
        return dict(zip(self.outputs, (torch.from_numpy(a) for a in self.session.run(self.outputs, feed))))

    def eval(self) -> OnnxModel:
        """No-op, for symmetry with torch models."""
        return self


def _config(folder: Path):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder)
    except (OSError, ValueError):
        return None


def onnx_parameters(folder: str | Path) -> int:
    """Number of values stored in the graph's initializers (its parameters)."""
    import onnx

    graph = onnx.load(str(Path(folder) / ONNX_FILE), load_external_data=False).graph
    total = 0
    for init in graph.initializer:
        n = 1
        for d in init.dims:
            n *= d
        total += n
    return total
