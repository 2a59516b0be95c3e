"""Accuracy of int8 ONNX variants of a run's model on its evaluation split, against fp32.

    .venv/bin/python benchmarks/onnx_int8_variants.py results/<run> --workdir /tmp/int8 --out int8.json

Traces the run's dense model to ONNX once, then quantizes it in several ways and evaluates each in
ONNX Runtime with ``movprune.export.evaluate`` (the run's recipe, split and metric code): ONNX
Runtime's dynamic quantization of MatMul per tensor and per output column, with ONNX Runtime's own
Gather quantization (one scale per embedding table), and movprune's ``--int8`` (MatMul per output
column, embedding tables per row). Prints JSON (and writes it to --out).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from pathlib import Path

from _report import emit  # benchmarks/_report.py, beside this script

#: name -> (ONNX Runtime op types, per_channel), or None for movprune's own --int8.
VARIANTS = {
    "ort MatMul per tensor": (["MatMul"], False),
    "ort MatMul per column": (["MatMul"], True),
    "ort MatMul per column + ort Gather per table": (["MatMul", "Gather"], True),
    "movprune --int8 (MatMul per column, Gather per row)": None,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--workdir", type=Path, help="where to write the graphs (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from movprune.export import bench, load_run_model
    from movprune.export import onnx as mo
    from movprune.export.evaluate import evaluate_model

    transformers.logging.set_verbosity_error()
    logging.getLogger().setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    model, tokenizer, _ = load_run_model(args.run_dir)
    report: dict = {"run": str(args.run_dir), "metrics": {}, "load_average_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="int8-") as tmp:
        root = args.workdir or Path(tmp)
        base = root / "fp32"
        base.mkdir(parents=True, exist_ok=True)
        mo.save_onnx(model, base, bench.check_batch(model.config.vocab_size), "dense")
        model.config.save_pretrained(base)
        report["metrics"]["pytorch fp32"] = evaluate_model(model, tokenizer, args.run_dir, "pytorch").metrics
        report["metrics"]["onnx fp32"] = evaluate_model(mo.OnnxModel(base, args.threads), tokenizer, args.run_dir,
                                                        "onnxruntime").metrics
        for i, (name, spec) in enumerate(VARIANTS.items()):
            folder = root / f"variant-{i}"
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(base, folder)
            if spec is None:
                mo.quantize_int8(folder)
            else:
                quantize_dynamic(str(base / mo.ONNX_FILE), str(folder / mo.ONNX_FILE), op_types_to_quantize=spec[0],
                                 per_channel=spec[1], weight_type=QuantType.QInt8)
            report["metrics"][name] = evaluate_model(mo.OnnxModel(folder, args.threads), tokenizer, args.run_dir,
                                                     "onnxruntime").metrics
    report["load_average_end"] = os.getloadavg()
    emit(report, args.out)


if __name__ == "__main__":
    main()
