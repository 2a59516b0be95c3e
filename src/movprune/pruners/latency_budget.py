"""The Fisher pruner's latency budget as a recipe sets it (``pruner.latency_table`` and
``pruner.latency_ms``): which problems recipe validation reports (the keys alone), which the run's
inputs check before training (the table's file, its budget, its model shape), and what the run
records of the table's prediction.

Recipe validation never reads the table: it also runs when a finished run's saved recipe is read
again (export ``--eval``, ``--resume``, a sweep's finished-run check), when the table may have moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from movprune.errors import RecipeError
from movprune.pruners.config import FisherConfig
from movprune.pruners.latency import BUILD_HINT, LatencyTable, LatencyTableError, TableDims, load_table


def key_problems(config: FisherConfig) -> list[str]:
    """A latency budget without a table (the keys alone; no file is read)."""
    if config.latency_table is None and config.latency_ms is not None:
        return [f"pruner.latency_ms: {config.latency_ms:g} ms is a latency measured on a lookup table; set "
                f"pruner.latency_table=PATH too ({BUILD_HINT})"]
    return []


def dims_of_config(model_config: Any) -> TableDims | None:
    """The table shape of a transformers config (None when it has no single shape, e.g. a compact export)."""
    try:
        if getattr(model_config, "num_attention_heads_per_layer", None):
            return None
        heads, hidden = int(model_config.num_attention_heads), int(model_config.hidden_size)
        return TableDims(num_hidden_layers=int(model_config.num_hidden_layers), num_attention_heads=heads,
                         attention_head_size=hidden // heads, hidden_size=hidden,
                         intermediate_size=int(model_config.intermediate_size))
    except (AttributeError, TypeError, ValueError):
        return None


def shape_problem(table: LatencyTable, dims: TableDims) -> str | None:
    """The one-line problem of a table measured for another model shape than ``dims``."""
    if table.dims == dims:
        return None
    return (f"pruner.latency_table: measured for a model of {table.dims.describe()}, but this model has "
            f"{dims.describe()}; {BUILD_HINT} (MODEL: this run's model)")


def input_problems(config: FisherConfig, dims: TableDims | None) -> list[str]:
    """The table of a run about to train: missing or not a table, a budget below the latency of the
    smallest model (no head, no neuron) it predicts, or measured for another shape than ``dims``."""
    if config.latency_table is None:
        return []
    try:
        table, _ = load_table(config.latency_table)
    except LatencyTableError as e:
        return [f"pruner.latency_table: {e}"]
    problems = []
    if config.latency_ms is not None and config.latency_ms < table.empty_model_ms:
        problems.append(f"pruner.latency_ms: {config.latency_ms:g} ms is below the {table.empty_model_ms:g} ms "
                        f"that the smallest model (no head, no neuron) takes by {config.latency_table} "
                        f"({table.stated_at()}); set pruner.latency_ms to at least {table.empty_model_ms:g} (the "
                        f"unpruned model takes {table.dense_ms():.4g} ms)")
    if dims is not None and (problem := shape_problem(table, dims)) is not None:
        problems.append(problem)
    return problems


def read_table(config: FisherConfig, dims: TableDims) -> tuple[LatencyTable, str]:
    """The configured table and its sha256, checked against the model's shape; raises :class:`RecipeError`."""
    path = str(config.latency_table)
    try:
        table, digest = load_table(path)
    except LatencyTableError as e:
        raise RecipeError("pruner.latency_table", [str(e)]) from None
    problem = shape_problem(table, dims)
    if problem is not None:
        raise RecipeError(path, [problem])
    return table, digest


def describe(config: FisherConfig, table: LatencyTable, digest: str, heads_per_layer: Sequence[int],
             neurons_per_layer: Sequence[int]) -> dict[str, Any]:
    """The ``pruner_summary`` keys of a run with a table: its prediction for the kept heads and
    neurons, the unpruned model's, the budget, and which table it was."""
    return {"latency_predicted_ms": round(table.predict_ms(heads_per_layer, neurons_per_layer), 4),
            "latency_dense_predicted_ms": round(table.dense_ms(), 4),
            "latency_budget_ms": config.latency_ms, "latency_table": str(config.latency_table),
            "latency_table_sha256": digest, "latency_runtime": table.runtime,
            "latency_batch_size": table.batch_size, "latency_seq_tokens": table.seq_tokens,
            "latency_threads": table.threads}
