"""Size and latency of every export format of a run against its dense model, in one process.

    .venv/bin/python benchmarks/export_speed.py results/quickstart-sst2-movement-10 --out export_speed.json

Exports the run as dense, compact, sparse and sparse int8 (into --workdir, a temporary folder by
default), loads each as a user would, and runs all of them on the same real sentences (SST-2 dev by
default): batch 1 (one sentence per call) and batch 32 (padded to the longest sentence in the
batch). Repetitions are interleaved, rotating the order of the formats, and the median is reported,
because the machine may be shared. Prints JSON (and writes it to --out).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from _report import emit  # benchmarks/_report.py, beside this script

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TEXTS = REPO / ".." / "shared" / "data" / "glue" / "SST-2" / "dev.tsv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--workdir", type=Path, help="where to write the exports (default: a temporary folder)")
    parser.add_argument("--texts", type=Path, default=DEFAULT_TEXTS, help="TSV with a 'sentence' column")
    parser.add_argument("--sentences", type=int, default=32, help="sentences timed one by one (batch 1)")
    parser.add_argument("--batches", type=int, default=2, help="batches of 32 sentences timed (batch 32)")
    parser.add_argument("--max-length", type=int, help="truncate at this many tokens (default: the run's "
                        "train.max_seq_length, else 128)")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved timed repetitions")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (kernel choice and timing)")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers
    import yaml

    from movprune import results
    from movprune.export import bench, export_run, folder_stats, load_export

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    result = results.load_result(args.run_dir)
    recipe = yaml.safe_load((args.run_dir / results.RECIPE_FILE).read_text(encoding="utf-8")) or {}
    max_length = args.max_length or (recipe.get("train") or {}).get("max_seq_length") or 128
    load_start = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="export-speed-") as tmp:
        workdir = args.workdir or Path(tmp)
        exports, export_seconds = {}, {}
        for name, fmt, int8 in (("dense", "dense", False), ("compact", "compact", False),
                                ("sparse", "sparse", False), ("sparse-int8", "sparse", True)):
            t0 = time.perf_counter()
            exports[name] = export_run(args.run_dir, workdir / name, fmt, int8=int8, force=True)
            export_seconds[name] = time.perf_counter() - t0
        models = {name: load_export(e.folder) for name, e in exports.items()}
        prefix = exports["dense"].encoder_prefix
        stats = {name: folder_stats(e.folder, prefix) for name, e in exports.items()}

        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(exports["dense"].folder)
        texts = bench.read_sentences(args.texts, limit=max(args.sentences, 32 * args.batches))
        batch1 = bench.text_batches(tokenizer, texts[:args.sentences], 1, max_length)
        batch32 = bench.text_batches(tokenizer, texts[:32 * args.batches], 32, max_length)

        # Same inputs for every format: how far are the outputs, and do predictions agree?
        agreement = {}
        for name, model in models.items():
            diffs, same, total = [], 0, 0
            for batch in batch32:
                ref = bench.model_outputs(models["dense"], batch)["logits"]
                got = bench.model_outputs(model, batch)["logits"]
                diffs.append(float((got - ref).abs().max()))
                same += int((got.argmax(-1) == ref.argmax(-1)).sum())
                total += len(ref)
            agreement[name] = {"max_abs_logit_diff": max(diffs), "prediction_agreement_pct": 100.0 * same / total}

        latency = bench.compare_latency(models, {1: batch1, 32: batch32}, args.repeats)
        tokens = {"batch_1_mean_tokens": statistics.mean(b["input_ids"].shape[1] for b in batch1),
                  "batch_32_padded_tokens": [b["input_ids"].shape[1] for b in batch32]}

    formats = {}
    for name, e in exports.items():
        lat = latency[name]
        formats[name] = {
            "encoder_bytes": stats[name].encoder_bytes, "total_bytes": stats[name].total_bytes,
            "parameters": stats[name].parameters,
            "encoder_size_vs_dense": stats[name].encoder_bytes / stats["dense"].encoder_bytes,
            "latency_ms": lat,
            "speedup_vs_dense": {k: latency["dense"][k]["median_ms"] / v["median_ms"] for k, v in lat.items()},
            **agreement[name], "check_batch_max_abs_diff": e.max_abs_diff, "export_seconds": export_seconds[name],
            "details": e.details,
        }
    report = {
        "run_dir": str(args.run_dir), "model": result.model, "task": result.task,
        "pruner": result.pruner, "remaining_pct": result.remaining_pct,
        "inputs": {"texts": str(args.texts), "max_length": max_length, "sentences_batch_1": len(batch1),
                   "batches_of_32": len(batch32), **tokens},
        "timing": {"repeats": args.repeats, "statistic": "median ms per batch (min/max also given)",
                   "order": "interleaved, rotating", "torch_threads": torch.get_num_threads(),
                   "cpu_count": os.cpu_count(), "load_average_start": load_start,
                   "load_average_end": os.getloadavg(), "machine": platform.machine(),
                   "processor": platform.processor() or platform.machine()},
        "versions": results.versions(),
        "formats": formats,
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
