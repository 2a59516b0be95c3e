"""Latency of given model folders (exports or a run's model/), side by side, in one process.

    .venv/bin/python benchmarks/folder_speed.py dense-onnx=exports/dense-onnx small=exports/small-onnx-int8 \
        --batch-size 32 --seq-length 128 --out speed.json

Each folder is loaded as a user would (:func:`movprune.export.load_export`: PyTorch for model
folders, ONNX Runtime for ONNX exports) and run on the same synthetic batch (token ids every
folder's vocabulary holds: latency depends on the shapes, not on which tokens). Repetitions are
interleaved, rotating the order, and the median is reported with min and max; the first folder is
the reference of the speed-up column. Prints JSON (and writes it to --out).
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

from _report import emit  # benchmarks/_report.py, beside this script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="NAME=FOLDER, the first is the reference")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=9, help="interleaved timed repetitions")
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers

    from movprune.export import bench, export_format, load_export

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    folders = dict(item.split("=", 1) for item in args.folders)
    models = {name: load_export(path, threads=args.threads) for name, path in folders.items()}
    vocab_size = min(m.config.vocab_size for m in models.values())
    batches = {args.batch_size: [bench.synthetic_batch(vocab_size, args.batch_size, args.seq_length)]}
    load_start = os.getloadavg()
    timing = bench.compare_latency(models, batches, args.repeats)
    reference = next(iter(timing.values()))[f"batch_{args.batch_size}"]["median_ms"]
    report = {
        "folders": {name: {"path": str(path), "format": export_format(path),
                           **timing[name][f"batch_{args.batch_size}"],
                           "speedup_vs_first": reference / timing[name][f"batch_{args.batch_size}"]["median_ms"]}
                    for name, path in folders.items()},
        "batch_size": args.batch_size, "seq_length": args.seq_length, "repeats": args.repeats,
        "threads": args.threads, "load_average_start": load_start, "load_average_end": os.getloadavg(),
        "machine": platform.processor() or platform.machine(),
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
