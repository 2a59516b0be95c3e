"""PyTorch int8 Linear backends on this CPU, beside the fp32 Linear a compact int8 export runs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/int8_linear_kernels.py --out int8_kernels.json

Times one encoder layer's Linear layers (default: MiniLM-L6 at hybrid 25%: Q, K, V 384→96, the
attention output 96→384, the FFN 384→384→384) on ``--rows`` token rows (batch 32 × 128) with: fp32
weights (what ``load_export`` runs on a compact int8 export: its int8 weights dequantized at load);
torchao's ``quantize_(layers, Int8DynamicActivationInt8WeightConfig())`` (its defaults: int8
weights per output row, activations quantized per token at each call, int8 × int8 matmuls), when
torchao is installed (``pip install torchao``; not a movprune dependency); and torch.ao's dynamic
quantization with per-channel weights (fbgemm / oneDNN), which torch deprecates. Each backend's
max |output difference| to fp32 is reported too. Repetitions are interleaved; the median is
reported with min and max. Prints JSON (and writes it to --out), with the torchao version used.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import statistics
import time
import warnings
from pathlib import Path

from _report import emit  # benchmarks/_report.py, beside this script


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--rows", type=int, default=32 * 128, help="token rows per call")
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--heads-width", type=int, default=96, help="kept heads x head size")
    parser.add_argument("--ffn", type=int, default=384, help="kept FFN neurons")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h, a, f = args.hidden, args.heads_width, args.ffn
    shapes = [(h, a), (h, a), (h, a), (a, h), (h, f), (f, h)]
    fp32 = nn.ModuleList(nn.Linear(i, o) for i, o in shapes).eval()
    inputs = {i: torch.randn(args.rows, i) for i, _ in shapes}
    backends = {"fp32": fp32}
    try:
        logging.getLogger("torchao").setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
        backends["torchao"] = copy.deepcopy(fp32)
        quantize_(backends["torchao"], Int8DynamicActivationInt8WeightConfig())
    except ImportError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation warning
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        backends["torch.ao dynamic"] = quantize_dynamic(copy.deepcopy(fp32), {nn.Linear: per_channel_dynamic_qconfig},
                                                        dtype=torch.qint8)

    def run(layers: nn.ModuleList) -> list[torch.Tensor]:
        return [layer(inputs[i]) for layer, (i, _) in zip(layers, shapes)]

    times: dict[str, list[float]] = {n: [] for n in backends}
    with torch.inference_mode():
        reference = run(fp32)
        diffs = {n: max(float((y - r).abs().max()) for y, r in zip(run(m), reference)) for n, m in backends.items()}
        names = list(backends)
        for rep in range(args.repeats):
            for name in names[rep % len(names):] + names[:rep % len(names)]:
                t0 = time.perf_counter()
                run(backends[name])
                times[name].append(1e3 * (time.perf_counter() - t0))
    ref_ms = statistics.median(times["fp32"])
    report = {
        "backends": {n: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v),
                         "speedup_vs_fp32": ref_ms / statistics.median(v), "max_abs_diff_vs_fp32": diffs[n]}
                     for n, v in times.items()},
        "shapes_in_out": shapes, "rows": args.rows, "repeats": args.repeats, "threads": args.threads,
        "torch": torch.__version__, "torchao": _version("torchao"), "load_average_end": os.getloadavg(),
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
