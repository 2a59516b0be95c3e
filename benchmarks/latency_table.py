"""Latency lookup table of a model on the runtime that will serve it, for the Fisher pruner's
latency budget (``pruner.latency_table`` + ``pruner.latency_ms``, docs/methods.md#fisher).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latency_table.py --model minilm-l6 \\
        --batch-size 32 --seq-tokens 128 --threads 1 --out latency-minilm-b32x128.json

At one batch size and sequence length it times, on the compact PyTorch model that ``movprune export
--format compact`` writes (``--runtime pytorch-compact``, float32, inference mode) or on its ONNX
graph in ONNX Runtime (``--runtime onnx-compact``, CPU provider, ``--threads`` intra-op threads, as
``--format onnx`` exports it), the whole model
with every block empty, and the whole model with every layer's attention keeping 1, ..., all heads
(FFN empty) and every layer's FFN keeping 1 and every ``--neuron-step`` neurons (attention empty):
one block's latency at a count is that model's, less the empty model's, over the layers. Each whole
model is the median of ``--repeats`` calls, all timed in interleaved rounds so that a change of load
on the machine spreads over every point. Each block's points are fitted (movprune.pruners.latency: a
constant up to a threshold, linear above). The weights are random (a block's latency does not depend
on their values) and the vocabulary is cut to 1024 entries (nor does an embedding lookup's).

``--check N`` then times whole compact models (the unpruned one, half of every layer, and N with
random heads and neurons per layer) against the table's prediction. Writes the table to ``--out`` and
prints JSON (the table's fit, the check; ``--report`` also writes it).

``--refit TABLE [--report REPORT]`` times nothing: it fits TABLE's measured points again (after a
change of the fit) and rewrites it, and, with ``--report``, that report's fits and checks (its
measured points and models) in both clocks.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import emit  # benchmarks/_report.py, beside this script

#: The runtimes a table can be measured for: the compact PyTorch model, and its ONNX graph on ONNX
#: Runtime's CPU provider (what ``movprune export --format compact`` and ``--format onnx`` serve).
RUNTIMES = ("pytorch-compact", "onnx-compact")
#: Vocabulary of the timed models: an embedding lookup's cost does not depend on the table's size,
#: and a small one keeps the ~30 models timed side by side in memory.
TIMING_VOCAB = 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6", help="a model alias or a run's model folder (its shape)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="pytorch-compact")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (set OMP_NUM_THREADS to match)")
    parser.add_argument("--neuron-step", type=int, default=128, help="FFN neurons between measured points")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per point (the median is kept)")
    parser.add_argument("--check", type=int, default=2, help="random whole models timed against the prediction")
    parser.add_argument("--seed", type=int, default=0, help="of the random weights, inputs and check models")
    parser.add_argument("--out", type=Path, help="the table (JSON) the recipe points at")
    parser.add_argument("--refit", type=Path, metavar="TABLE", help="re-fit this table's measured points "
                        "(and --report's) and rewrite it; times nothing")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="what the table holds: wall-clock latency, or this process's CPU time (with "
                             "--threads 1, the latency the machine would give unloaded); both are reported")
    parser.add_argument("--report", type=Path, help="also write the printed JSON here")
    args = parser.parse_args()
    if args.refit is not None:
        emit(refit(args.refit, args.report), None)
        return
    if args.out is None:
        parser.error("--out is required (unless --refit)")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers

    from movprune.io import atomic_write_text
    from movprune.pruners.latency import grid

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    base = _dense_config(args.model)
    dims = {"num_hidden_layers": base.num_hidden_layers, "num_attention_heads": base.num_attention_heads,
            "attention_head_size": base.hidden_size // base.num_attention_heads, "hidden_size": base.hidden_size,
            "intermediate_size": base.intermediate_size}
    load_start = os.getloadavg()
    start = time.perf_counter()
    heads_grid = list(range(dims["num_attention_heads"] + 1))
    neurons_grid = grid(dims["intermediate_size"], args.neuron_step)
    layers = dims["num_hidden_layers"]
    inputs = _inputs(base, args.batch_size, args.seq_tokens)
    # Each block is timed where it runs when served: inside the whole model (its attention mask, its
    # chained activations), as the model with that block in every layer and the other block empty.
    shapes = {"empty": ([0] * layers, [0] * layers)}
    shapes.update({f"attention:{h}": ([h] * layers, [0] * layers) for h in heads_grid[1:]})
    shapes.update({f"ffn:{n}": ([0] * layers, [n] * layers) for n in neurons_grid[1:]})
    checks = _check_shapes(base, args.check, args.seed)
    # the check's models run in the same rounds, so that they see the same load as the table's
    with tempfile.TemporaryDirectory(prefix="latency-table-") as tmp:
        calls = {key: _runner(_model(base, h, n), args, inputs, Path(tmp) / key.replace(":", "-"))
                 for key, (h, n) in {**shapes, **checks}.items()}
        clocks = _interleaved(calls, args.repeats, torch)
    tables = {clock: _table(args, dims, heads_grid, neurons_grid, medians, load_start)
              for clock, medians in clocks.items()}
    table = tables[args.clock]
    atomic_write_text(args.out, table.model_dump_json(by_alias=True, indent=2) + "\n")

    report = {
        "benchmark": "latency_table", "table": str(args.out), "model": args.model, "runtime": args.runtime,
        "batch_size": args.batch_size, "seq_tokens": args.seq_tokens, "threads": args.threads, "clock": args.clock,
        "dims": dims, "repeats": args.repeats,
        **{clock: _summary(t, checks, clocks[clock]) for clock, t in tables.items()},
        "seconds": round(time.perf_counter() - start, 1), "load_average_at_start": load_start,
        "load_average_at_end": os.getloadavg(), "torch_version": torch.__version__,
    }
    emit(report, args.report)


def _table(args, dims: dict[str, int], heads_grid: list[int], neurons_grid: list[int], medians: dict[str, float],
           load_start: tuple[float, float, float]):
    from movprune.pruners.latency import TABLE_SCHEMA, LatencyTable, block_table

    empty_ms = medians["empty"]
    layers = dims["num_hidden_layers"]

    def per_layer(key: str) -> float:
        # noise may put a nearly empty block below the empty model: no block takes less than none
        return max(0.0, round((medians[key] - empty_ms) / layers, 4))

    return LatencyTable.model_validate({
        "schema": TABLE_SCHEMA, "model": args.model, "dims": dims, "runtime": args.runtime,
        "batch_size": args.batch_size, "seq_tokens": args.seq_tokens, "threads": args.threads,
        "empty_model_ms": empty_ms,
        "attention": block_table([(0, 0.0)] + [(h, per_layer(f"attention:{h}")) for h in heads_grid[1:]]).model_dump(),
        "ffn": block_table([(0, 0.0)] + [(n, per_layer(f"ffn:{n}")) for n in neurons_grid[1:]]).model_dump(),
        "clock": args.clock, "dtype": "float32", "repeats": args.repeats, "neuron_step": args.neuron_step,
        "whole_model_ms": {k: v for k, v in medians.items() if not k.startswith("check:")},
        "torch_version": _torch_version(), "machine": platform.machine(), "processor": platform.processor(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_average_at_start": load_start,
    })


def refit(table_path: Path, report_path: Path | None) -> dict[str, Any]:
    """Fit the table's (and the report's) measured points again and rewrite them; the report, or the
    table's new fits."""
    import json

    from movprune.io import atomic_write_text
    from movprune.pruners.latency import LatencyTable, block_table

    data = json.loads(table_path.read_text(encoding="utf-8"))
    data.update(attention=block_table(data["attention"]["points"]).model_dump(),
                ffn=block_table(data["ffn"]["points"]).model_dump())
    table = LatencyTable.model_validate(data)
    atomic_write_text(table_path, table.model_dump_json(by_alias=True, indent=2) + "\n")
    if report_path is None:
        return {"table": str(table_path), "attention_fit": table.attention.fit.model_dump(),
                "ffn_fit": table.ffn.fit.model_dump(), "dense_predicted_ms": round(table.dense_ms(), 3)}
    report = json.loads(report_path.read_text(encoding="utf-8"))
    for clock in ("wall", "cpu"):
        old = report[clock]
        clock_table = LatencyTable.model_validate({
            **data, "empty_model_ms": old["empty_model_ms"], "attention": block_table(old["attention_points"]),
            "ffn": block_table(old["ffn_points"])})
        checks = {f"check:{r['model']}": (r["heads_per_layer"], r["neurons_per_layer"]) for r in old["check"]}
        report[clock] = _summary(clock_table, checks, {f"check:{r['model']}": r["measured_ms"] for r in old["check"]})
    atomic_write_text(report_path, json.dumps(report, indent=2) + "\n")
    return report


def _torch_version() -> str:
    import torch

    return torch.__version__


def _summary(table, checks: dict[str, tuple[list[int], list[int]]], medians: dict[str, float]) -> dict[str, Any]:
    """A table's fit and the check of its prediction against the whole models measured."""
    rows = []
    for key, (h, n) in checks.items():
        predicted, measured = table.predict_ms(h, n), medians[key]
        rows.append({"model": key.removeprefix("check:"), "heads_per_layer": h, "neurons_per_layer": n,
                     "measured_ms": measured, "predicted_ms": round(predicted, 3),
                     "error_pct": round(100.0 * (predicted - measured) / measured, 2)})
    return {"empty_model_ms": table.empty_model_ms,
            "attention_fit": {**table.attention.fit.model_dump(),
                              "max_abs_residual_ms": round(table.attention.max_abs_residual_ms, 4)},
            "ffn_fit": {**table.ffn.fit.model_dump(), "max_abs_residual_ms": round(table.ffn.max_abs_residual_ms, 4)},
            "attention_points": table.attention.points, "ffn_points": table.ffn.points,
            "dense_predicted_ms": round(table.dense_ms(), 3), "check": rows}


def _dense_config(spec: str):
    """The model's (uncompacted) config."""
    from transformers import AutoConfig

    from movprune.models import resolve_model

    resolved = resolve_model(spec)
    if resolved.path is None:
        return resolved.config
    config = AutoConfig.from_pretrained(resolved.path, trust_remote_code=False)
    if getattr(config, "num_attention_heads_per_layer", None):
        raise SystemExit(f"{spec}: a compact export; give the model it was exported from (its full shape)")
    return config


def _compact_config(base, heads: list[int], neurons: list[int]):
    from movprune.export import compact_bert

    config_class = compact_bert.COMPACT_CONFIGS.get(base.model_type)
    if config_class is None:
        raise SystemExit(f"model_type {base.model_type!r}: the compact runtime serves BERT and RoBERTa only")
    values = {k: v for k, v in base.to_dict().items() if k not in ("model_type", "architectures", "auto_map")}
    return config_class.from_dict({**values, "num_hidden_layers": len(heads), "vocab_size": TIMING_VOCAB,
                                   "attention_head_size": base.hidden_size // base.num_attention_heads,
                                   "num_attention_heads_per_layer": heads, "intermediate_size_per_layer": neurons})


def _model(base, heads: list[int], neurons: list[int]):
    from movprune.export import compact_bert

    name = "CompactRobertaForSequenceClassification" if base.model_type == "roberta" else \
        "CompactBertForSequenceClassification"
    return getattr(compact_bert, name)(_compact_config(base, heads, neurons)).eval()


def _inputs(base, batch_size: int, seq_tokens: int) -> dict[str, Any]:
    import torch

    ids = torch.randint(0, TIMING_VOCAB, (batch_size, seq_tokens))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _runner(model, args, inputs: dict[str, Any], folder: Path):
    """A call of ``model`` on ``inputs`` on the table's runtime (ONNX: traced into ``folder``)."""
    if args.runtime == "pytorch-compact":
        return lambda: model(**inputs)
    from movprune.export.onnx import OnnxModel, save_onnx

    folder.mkdir(parents=True)
    save_onnx(model, folder, inputs, source="benchmarks/latency_table.py")
    session = OnnxModel(folder, threads=args.threads)
    return lambda: session(**inputs)


def _interleaved(calls: dict[str, Any], repeats: int, torch) -> dict[str, dict[str, float]]:
    """Median milliseconds per call, by the wall clock and by this process's CPU time: one untimed
    warm-up call each, then ``repeats`` rounds over all of them."""
    wall: dict[str, list[float]] = {k: [] for k in calls}
    cpu: dict[str, list[float]] = {k: [] for k in calls}
    with torch.inference_mode():
        for call in calls.values():
            call()
        for _ in range(repeats):
            for key, call in calls.items():
                w0, c0 = time.perf_counter(), time.process_time()
                call()
                wall[key].append(time.perf_counter() - w0)
                cpu[key].append(time.process_time() - c0)
    return {clock: {k: round(1000.0 * statistics.median(v), 4) for k, v in times.items()}
            for clock, times in (("wall", wall), ("cpu", cpu))}


def _check_shapes(base, count: int, seed: int) -> dict[str, tuple[list[int], list[int]]]:
    """Whole models to check the prediction on: unpruned, half of every layer, ``count`` random ones."""
    layers, heads, ffn = base.num_hidden_layers, base.num_attention_heads, base.intermediate_size
    rng = random.Random(seed)
    shapes = {"check:dense": ([heads] * layers, [ffn] * layers),
              "check:half": ([heads // 2] * layers, [ffn // 2] * layers)}
    for i in range(count):
        shapes[f"check:random-{i}"] = ([rng.randint(0, heads) for _ in range(layers)],
                                       [rng.randint(0, ffn) for _ in range(layers)])
    return shapes


if __name__ == "__main__":
    main()
