"""Latency measurement of exported models: same inputs for every model, interleaved repetitions."""

from __future__ import annotations

import csv
import inspect
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def synthetic_batch(vocab_size: int, batch_size: int, seq_length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids (no padding): latency depends on the shapes, not on which tokens."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000 if vocab_size > 2000 else 1, vocab_size, (batch_size, seq_length), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def check_batch(vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A small batch with padding (rows of different lengths), for comparing two models' outputs."""
    batch = synthetic_batch(vocab_size, 4, 24, seed)
    for row, length in enumerate((24, 17, 9, 3)):
        batch["attention_mask"][row, length:] = 0
        batch["input_ids"][row, length:] = 0
    return batch


def read_sentences(path: str | Path, limit: int | None = None) -> list[str]:
    """The ``sentence`` column (else the first column) of a GLUE-style TSV file."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        col = header.index("sentence") if "sentence" in header else 0
        texts = [row[col].strip() for row in reader if row]
    return texts[:limit] if limit else texts


def text_batches(tokenizer, texts: list[str], batch_size: int, max_length: int) -> list[dict[str, torch.Tensor]]:
    """Tokenised batches of ``texts``, each padded to its longest sentence (as served in practice)."""
    return [dict(tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                           return_tensors="pt"))
            for i in range(0, len(texts), batch_size)]


def model_inputs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of ``batch`` that ``model.forward`` takes (DistilBERT and ModernBERT take no
    ``token_type_ids``)."""
    try:  # a torch module's forward, or any other callable model (the ONNX Runtime wrapper)
        params = inspect.signature(getattr(model, "forward", model)).parameters
    except (TypeError, ValueError):
        return batch
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return batch
    return {k: v for k, v in batch.items() if k in params}


def model_outputs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The output tensors of ``model`` on ``batch`` (logits, start/end logits, hidden states...)."""
    with torch.inference_mode():
        out = model(**model_inputs(model, batch))
    return {k: v for k, v in out.items() if isinstance(v, torch.Tensor) and k != "loss"}


def max_abs_diff(reference: torch.nn.Module, other: torch.nn.Module, batches: list[dict[str, torch.Tensor]],
                 other_batches: list[dict[str, torch.Tensor]] | None = None) -> float:
    """Largest absolute difference between the two models' outputs over ``batches`` (``other`` reads
    ``other_batches`` instead when given: the same texts under its own token ids)."""
    worst = 0.0
    for batch, batch_b in zip(batches, other_batches or batches):
        a, b = model_outputs(reference, batch), model_outputs(other, batch_b)
        if a.keys() != b.keys():
            raise ValueError(f"the models return different outputs: {sorted(a)} vs {sorted(b)}")
        for k in a:
            mask = batch.get("attention_mask")
            x, y = a[k], b[k]
            if k in ("last_hidden_state",) and mask is not None:  # padding positions are not outputs
                x, y = x[mask.bool()], y[mask.bool()]
            worst = max(worst, float((x - y).abs().max()))
    return worst


def time_interleaved(models: dict[str, Callable[[dict[str, torch.Tensor]], Any]],
                     batches: list[dict[str, torch.Tensor]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Milliseconds per batch of each model, one value per repetition.

    In each repetition every model runs over all ``batches`` in turn, and the order of the models
    rotates between repetitions, so slow phases of a shared machine fall on all models alike.
    """
    names = list(models)
    with torch.inference_mode():
        for _ in range(warmup):
            for name in names:
                for batch in batches:
                    models[name](batch)
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(repeats):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                t0 = time.perf_counter()
                for batch in batches:
                    models[name](batch)
                times[name].append(1e3 * (time.perf_counter() - t0) / len(batches))
    return times


def summarize(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Median (the reported number), min and max of each model's repetitions, in ms."""
    return {n: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v), "repeats": len(v)}
            for n, v in times.items()}


def compare_latency(models: dict[str, torch.nn.Module], batches_by_size: dict[int, list[dict[str, torch.Tensor]]],
                    repeats: int) -> dict[str, dict[str, dict[str, float]]]:
    """Latency summaries (ms per batch) of every model at every batch size: model -> "batch_<n>" -> stats."""
    out: dict[str, dict[str, dict[str, float]]] = {name: {} for name in models}
    for size, batches in batches_by_size.items():
        keys = {name: list(model_inputs(m, batches[0])) for name, m in models.items()}
        calls = {name: (lambda b, m=m, ks=keys[name]: m(**{k: b[k] for k in ks})) for name, m in models.items()}
        for name, stats in summarize(time_interleaved(calls, batches, repeats)).items():
            out[name][f"batch_{size}"] = stats
    return out
