"""ONNX export: the run's model (dense, or compact with its emptied heads and neurons removed) as one
``model.onnx`` file for ONNX Runtime, with dynamic batch and sequence axes.

Needs the ``onnx`` extra (``pip install 'movprune[onnx]'``: onnx, onnxruntime). The graph is
traced by torch's TorchScript exporter: it handles the compact model's per-layer widths, including
a layer with no head or no neuron left, and exports a small model in seconds.
"""

from __future__ import annotations

import json
import logging
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


#: What ``--int8`` quantizes: every MatMul with a constant weight (the encoder's Linear layers, the
#: pooler and the classifier; ONNX Runtime dynamic quantization, int8 weights with one scale per output
#: column, activations quantized per call) and every Gather from a constant table (the word, position
#: and token-type embeddings: int8 rows with one scale per row, dequantized on lookup).
INT8_OPS = ("MatMul", "Gather")


def _quantize_tables_per_row(model) -> int:
    """Replace each ``Gather`` (axis 0) from a constant 2-D fp32 table by a lookup in an int8 copy
    and in a per-row scale, then ``Cast`` and ``Mul``: row ``r`` is stored as ``q_r * s_r`` with
    ``s_r = max|row| / 127``. Returns the number of tables quantized. (ONNX Runtime's own Gather
    quantization uses one scale for the whole table, which costs accuracy on embedding tables.)"""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    done = 0
    nodes = []
    for node in graph.node:
        table = inits.get(node.input[0]) if node.op_type == "Gather" else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if table is None or axis != 0 or len(table.dims) != 2 or table.data_type != TensorProto.FLOAT:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(table)
        peak = np.abs(w).max(axis=1, keepdims=True)
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        base, out = table.name, node.output[0]
        graph.initializer.remove(table)
        graph.initializer.extend([numpy_helper.from_array(q, base + "_int8"),
                                  numpy_helper.from_array(scale, base + "_row_scale")])
        nodes += [helper.make_node("Gather", [base + "_int8", node.input[1]], [out + "_int8"], name=node.name),
                  helper.make_node("Gather", [base + "_row_scale", node.input[1]], [out + "_scale"],
                                   name=node.name + "_row_scale"),
                  helper.make_node("Cast", [out + "_int8"], [out + "_f"], to=TensorProto.FLOAT,
                                   name=node.name + "_cast"),
                  helper.make_node("Mul", [out + "_f", out + "_scale"], [out], name=node.name + "_dequantize")]
        done += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return done


def quantize_int8(folder: Path) -> dict[str, Any]:
    """Replace ``folder/model.onnx`` by its int8 version (see :data:`INT8_OPS`); returns what was
    quantized."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = Path(folder) / ONNX_FILE
    tmp = path.with_name("model.int8.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice about static-quantization preprocessing
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(path), str(tmp), op_types_to_quantize=["MatMul"], per_channel=True,
                             weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    model = onnx.load(str(tmp))
    tables = _quantize_tables_per_row(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp))
    tmp.replace(path)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return {"int8_ops": list(INT8_OPS), "int8_weights": "MatMul: QInt8 per output column (ONNX Runtime dynamic "
            "quantization); Gather tables: int8 per row", "int8_tables": tables,
            "quantized_node_counts": {k: v for k, v in sorted(counts.items())
                                      if k in ("MatMulInteger", "DynamicQuantizeLinear")}}


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


def onnx_weight_bytes(folder: str | Path, encoder_prefix: str) -> dict[str, int]:
    """Bytes of the graph's initializers by part (``embeddings``, ``encoder``, ``head``). The
    exporter renames transposed weights (``onnx::MatMul_12``), so an initializer is placed by its own
    name or by the scoped names of the nodes reading it (``/bert/encoder/layer.0/...``), through
    Identity nodes."""
    import onnx
    from onnx import numpy_helper

    from movprune.export.folders import weight_part

    graph = onnx.load(str(Path(folder) / ONNX_FILE)).graph
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def names(value: str, depth: int = 0) -> list[str]:
        found = [value]
        for node in readers.get(value, []):
            found.append(node.name)
            if node.op_type == "Identity" and depth < 3:
                found += [n for out in node.output for n in names(out, depth + 1)]
        return found

    parts = {"embeddings": 0, "encoder": 0, "head": 0}
    for init in graph.initializer:
        seen = {weight_part(n, encoder_prefix) for n in names(init.name)}
        part = "embeddings" if "embeddings" in seen else "encoder" if "encoder" in seen else "head"
        parts[part] += numpy_helper.to_array(init).nbytes
    return parts


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
