"""Training-step time of every pruning method against dense fine-tuning of the same model.

    .venv/bin/python benchmarks/train_overhead.py --out train_overhead.json

One process holds a model, pruner and optimizer per method (MiniLM by default; dense, magnitude,
movement, global movement, soft movement, L0, sensitivity) and times full training steps (``pruner.step``,
forward, penalty, backward, gradient clipping, AdamW step, ``after_optimizer_step``) on a fixed
batch of 32 random token sequences of length 64, in fp32 and under bf16 autocast. Methods are
interleaved: every round runs each method for ``--steps`` steps, the order rotating between rounds,
so load on a shared machine hits all methods alike; medians over all timed steps are reported, with
each method's ratio to dense in the same precision. ``--threads 1,2`` repeats the whole measurement
for each torch thread count (results keyed by thread count, then precision). The pruners run
mid-ramp (the schedule at 50%), soft movement and L0 with a target (controller on). Learned scores
start spread (normal noise of std ``--score-spread``, 0.1 by default) as they are after the first
hundred steps of a real run: freshly initialised scores are all equal, and every top-k selection
would then take its slow path (``--score-spread 0`` times that state). Prints JSON (and writes it
to --out).

    .venv/bin/python benchmarks/train_overhead.py --threads 1,2 --out train_overhead.json

``--random-encoder bert-base`` times a randomly initialised BERT-base-sized encoder instead (12 layers,
hidden 768; no weights needed; ``tiny``: 2 layers, hidden 64), and ``--device cuda`` runs on the GPU
(bf16 autocast on that device; each method's optimizer groups report whether they use the fused AdamW
kernel). On a GPU, at batch 32 x 128:

    python3 benchmarks/train_overhead.py --random-encoder bert-base --device cuda --seq-length 128
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from _report import emit  # benchmarks/_report.py, beside this script

METHODS = {  # label -> PrunerConfig fields
    "dense": {"method": "none"},
    "magnitude": {"method": "magnitude", "remaining_pct": 10},
    "movement": {"method": "movement", "remaining_pct": 10},
    "movement_global": {"method": "movement", "remaining_pct": 10, "scope": "global"},
    "soft_movement": {"method": "soft_movement", "remaining_pct": 10},
    "l0": {"method": "l0", "remaining_pct": 10},
    "sensitivity": {"method": "sensitivity", "remaining_pct": 10},
}
#: Schedule length the pruners believe in; timing starts mid-ramp.
TOTAL_STEPS = 1000
START_STEP = 450


def random_encoder(size: str):
    """A random BERT of ``size``: ``bert-base`` (transformers' BertConfig defaults: 12 layers,
    hidden 768, 12 heads, FFN 3072, vocabulary 30522) or ``tiny`` (movprune's tiny-random-bert)."""
    from transformers import BertConfig

    from movprune.models import ResolvedModel, tiny_bert_config

    config = BertConfig() if size == "bert-base" else tiny_bert_config()
    return ResolvedModel(f"random-{size}", None, "", config=config, model_type="bert")


def build(label: str, fields: dict, model_spec: str, seed: int, score_spread: float = 0.0,
          random_size: str | None = None, device: str = "cpu"):
    """(model, pruner, optimizer) for one method, built as the training loop builds them, its
    learned scores (if any) moved by normal noise of std ``score_spread``; the model moves to
    ``device`` before the optimizer is built."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from movprune import pruners
    from movprune.models import resolve_model
    from movprune.recipe import TrainConfig
    from movprune.training.loop import build_optimizer

    config = pruners.pruner_config(**fields)
    torch.manual_seed(seed)
    resolved = random_encoder(random_size) if random_size else resolve_model(model_spec)
    model = resolved.instantiate(AutoModelForSequenceClassification, num_labels=2)
    model.base_model.embeddings.requires_grad_(False)
    pruner = pruners.build_pruner(config, TOTAL_STEPS)
    pruner.attach(model)
    if score_spread > 0:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for group in pruner.parameter_groups():
                for scores in group["params"]:
                    scores.add_(torch.randn(scores.shape, generator=gen), alpha=score_spread)
    model.to(device)
    optimizer = build_optimizer(model, pruner, TrainConfig(lr=1e-4))
    model.train()
    fused = [g.get("name", "?") for g in optimizer.param_groups if g.get("fused")]
    return {"label": label, "model": model, "pruner": pruner, "optimizer": optimizer, "step": START_STEP,
            "device": device, "fused_groups": fused}


def timed_step(run: dict, batch: dict, bf16: bool) -> float:
    """One step of the training loop's own :func:`~movprune.training.loop.train_step`; its wall
    time in seconds (the loss parts are read, as logging would, so queued work is counted)."""
    import torch

    from movprune.training.loop import train_step

    start = time.perf_counter()
    parts = train_step(run["model"], batch, run["step"], pruner=run["pruner"], optimizer=run["optimizer"],
                       max_grad_norm=1.0,
                       autocast=lambda: torch.autocast(run["device"], dtype=torch.bfloat16, enabled=bf16))
    float(parts["loss"])
    run["step"] += 1
    return time.perf_counter() - start


def measure(runs: list[dict], batch: dict, precisions: list[str], args) -> dict[str, dict[str, list[float]]]:
    """Step times per precision and method: warm-up steps, then interleaved rounds."""
    times: dict[str, dict[str, list[float]]] = {p: {r["label"]: [] for r in runs} for p in precisions}
    for precision in precisions:
        bf16 = precision == "bf16"
        for run in runs:
            for _ in range(args.warmup):
                timed_step(run, batch, bf16)
        for round_ in range(args.repeats):
            shift = round_ % len(runs)
            for run in runs[shift:] + runs[:shift]:
                for _ in range(args.steps):
                    times[precision][run["label"]].append(timed_step(run, batch, bf16))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--random-encoder", choices=("bert-base", "tiny"),
                        help="time a randomly initialised BERT of this size instead of --model")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-length", type=int, default=64)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated labels")
    parser.add_argument("--precisions", default="fp32,bf16", help="fp32, bf16 or both")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per method per round")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per method and precision")
    parser.add_argument("--threads", default="1", help="comma-separated torch thread counts, e.g. 1,2")
    parser.add_argument("--score-spread", type=float, default=0.1,
                        help="std of the normal noise added to learned scores (0: all equal, as at step 0)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    thread_counts = [int(t) for t in args.threads.split(",") if t]
    labels = [m for m in args.methods.split(",") if m]
    unknown = [m for m in labels if m not in METHODS]
    if unknown or "dense" not in labels:
        parser.error(f"--methods must include dense and only use: {', '.join(METHODS)}")
    precisions = [p for p in args.precisions.split(",") if p]
    load_start = os.getloadavg()
    wall_start = time.perf_counter()

    gen = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1000, 29000, (args.batch_size, args.seq_length), generator=gen),
             "attention_mask": torch.ones(args.batch_size, args.seq_length, dtype=torch.long),
             "labels": torch.randint(0, 2, (args.batch_size,), generator=gen)}
    batch = {k: v.to(args.device) for k, v in batch.items()}
    runs = [build(label, METHODS[label], args.model, seed=0, score_spread=args.score_spread,
                  random_size=args.random_encoder, device=args.device) for label in labels]
    results: dict[str, dict[str, dict]] = {}
    loads: dict[str, list[float]] = {}
    for threads in thread_counts:
        if args.out and results:  # a long sweep leaves what it has measured so far
            args.out.write_text(json.dumps({"partial": True, "results": results, "load_averages": loads},
                                           indent=2) + "\n", encoding="utf-8")
        torch.set_num_threads(threads)
        times = measure(runs, batch, precisions, args)
        loads[str(threads)] = [round(x, 2) for x in os.getloadavg()]
        results[str(threads)] = {}
        for precision, by_label in times.items():
            dense = statistics.median(by_label["dense"])
            results[str(threads)][precision] = {
                label: {"median_step_seconds": round(statistics.median(ts), 4),
                        "ratio_to_dense": round(statistics.median(ts) / dense, 3),
                        "min_step_seconds": round(min(ts), 4), "timed_steps": len(ts)}
                for label, ts in by_label.items()}
    report = {
        "benchmark": "train_overhead", "model": f"random-{args.random_encoder}" if args.random_encoder else args.model,
        "device": args.device, "batch_size": args.batch_size,
        "fused_adamw_groups": {r["label"]: r["fused_groups"] for r in runs},
        "seq_length": args.seq_length, "steps_per_round": args.steps, "rounds": args.repeats,
        "score_spread": args.score_spread,
        "threads": thread_counts, "schedule": f"from step {START_STEP} of a {TOTAL_STEPS}-step schedule (mid-ramp)",
        "results": results,
        "worst_ratio": {t: {p: max(v["ratio_to_dense"] for v in r.values()) for p, r in by_p.items()}
                        for t, by_p in results.items()},
        "load_average_after_each_thread_count": loads,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
                    "load_average_start": [round(x, 2) for x in load_start],
                    "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        "wall_seconds": round(time.perf_counter() - wall_start, 1),
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
