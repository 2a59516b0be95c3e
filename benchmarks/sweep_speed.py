"""Measured speed of every run of a sweep: export each, time it against the dense model, write JSON.

    .venv/bin/python benchmarks/sweep_speed.py results/my-sweep --out speed.json
    movprune compare results/my-sweep --speed speed.json --plot-speed frontier.png

For every finished run under the given folders: export it as compact (emptied heads and neurons
removed; PyTorch), as ONNX of that compact model (ONNX Runtime) and, with --sparse, as sparse
(CSR). The dense reference is the dense model in PyTorch and in ONNX Runtime (the run with
method ``none`` when there is one, else the first run's model, which is as slow: its zeros are
computed). All models run on the same synthetic inputs, batch 1 and batch 32 of --seq-length
(128) tokens, repetitions interleaved with the order rotating (the machine may be shared), and
the median is reported. Speed-ups are against the dense model in the same runtime (PyTorch
formats against dense PyTorch, ONNX against dense ONNX; ``speedup_vs_dense_pytorch`` too);
``best`` holds the fastest format of a run per runtime. Prints JSON (and writes it to --out).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from _report import emit  # benchmarks/_report.py, beside this script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", type=Path, nargs="+", help="run folders or folders holding them")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--workdir", type=Path, help="where to write the exports (default: a temporary folder)")
    parser.add_argument("--seq-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=9, help="interleaved timed repetitions")
    parser.add_argument("--calls", type=int, default=10, help="batch-1 calls per repetition")
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--sparse", action="store_true", help="also time the sparse (CSR) export")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers

    from movprune import results
    from movprune.experiments.compare import scan_runs
    from movprune.export import bench, export_run, load_export

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    scan = scan_runs(args.dirs)
    for warning in scan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not scan.results:
        sys.exit(f"no finished runs under {', '.join(map(str, args.dirs))}")
    runs = sorted(scan.results, key=lambda r: (r["pruner"] != "none", r["run_dir"]))
    load_start = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="sweep-speed-") as tmp:
        workdir = args.workdir or Path(tmp)
        models, entries, formats_of = {}, {}, {}
        reference = runs[0]
        ref_dir = Path(reference["run_dir"])
        models["dense/pytorch"] = load_export(ref_dir / results.MODEL_DIR)
        export_run(ref_dir, workdir / "dense-onnx", "onnx", onnx_source="dense", force=True)
        models["dense/onnx"] = load_export(workdir / "dense-onnx", threads=args.threads)
        for i, r in enumerate(runs):
            key = f"{i:02d}-{Path(r['run_dir']).name}"
            metric = (r.get("metric_names") or list(r["metrics"]))[0]
            entries[key] = {"run_dir": r["run_dir"], "pruner": results.pruner_label(r), "method": r["pruner"],
                            "remaining_pct": r["remaining_pct"], "metric": metric,
                            "metric_value": r["metrics"][metric], "seed": r["seed"], "exports": {}}
            if r["pruner"] == "none":
                formats_of[key] = {"pytorch": "dense/pytorch", "onnx": "dense/onnx"}
                continue
            run_dir = Path(r["run_dir"])
            chosen = {}
            t0 = time.perf_counter()
            e = export_run(run_dir, workdir / key / "compact", "compact", force=True)
            entries[key]["exports"]["compact"] = e.details
            models[f"{key}/compact"] = load_export(e.folder)
            chosen["compact"] = f"{key}/compact"
            e = export_run(run_dir, workdir / key / "onnx", "onnx", force=True)
            models[f"{key}/onnx"] = load_export(e.folder, threads=args.threads)
            chosen["onnx"] = f"{key}/onnx"
            if args.sparse:
                e = export_run(run_dir, workdir / key / "sparse", "sparse", force=True)
                models[f"{key}/sparse"] = load_export(e.folder)
                chosen["sparse"] = f"{key}/sparse"
            entries[key]["export_seconds"] = time.perf_counter() - t0
            formats_of[key] = chosen

        vocab = models["dense/pytorch"].config.vocab_size
        batches = {1: [bench.synthetic_batch(vocab, 1, args.seq_length, seed=s) for s in range(args.calls)],
                   32: [bench.synthetic_batch(vocab, 32, args.seq_length)]}
        latency = bench.compare_latency(models, batches, args.repeats)

    runtime = {"pytorch": "pytorch", "compact": "pytorch", "sparse": "pytorch", "onnx": "onnx"}
    dense = {rt: {s: latency[f"dense/{rt}"][f"batch_{s}"]["median_ms"] for s in (1, 32)} for rt in ("pytorch", "onnx")}
    for key, entry in entries.items():
        for fmt, name in formats_of[key].items():
            entry[fmt] = {f"batch_{s}": {
                **latency[name][f"batch_{s}"], "runtime": runtime[fmt],
                "speedup_vs_dense": dense[runtime[fmt]][s] / latency[name][f"batch_{s}"]["median_ms"],
                "speedup_vs_dense_pytorch": dense["pytorch"][s] / latency[name][f"batch_{s}"]["median_ms"]}
                for s in (1, 32)}
        # per runtime, the fastest format of the run, against the dense model in that runtime
        entry["best"] = {}
        for rt in ("pytorch", "onnx"):
            fmts = [f for f in formats_of[key] if runtime[f] == rt]
            entry["best"][rt] = {}
            for s in (1, 32):
                fmt = max(fmts, key=lambda f: entry[f][f"batch_{s}"]["speedup_vs_dense"])
                entry["best"][rt][f"batch_{s}"] = {"format": fmt,
                                                   "speedup_vs_dense": entry[fmt][f"batch_{s}"]["speedup_vs_dense"]}
    report = {
        "reference": {"run_dir": reference["run_dir"], "dense_pytorch_ms": dense["pytorch"],
                      "dense_onnx_ms": dense["onnx"]},
        "inputs": {"seq_length": args.seq_length, "batch_sizes": [1, 32], "batch_1_calls": args.calls,
                   "tokens": "synthetic ids, no padding"},
        "timing": {"repeats": args.repeats, "statistic": "median ms per batch (min/max also given)",
                   "order": "interleaved, rotating", "threads": args.threads, "cpu_count": os.cpu_count(),
                   "load_average_start": load_start, "load_average_end": os.getloadavg(),
                   "machine": platform.machine()},
        "versions": results.versions(),
        "runs": entries,
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
