"""The latency model of the Fisher pruner's latency budget: a lookup table measured on the machine and
runtime that will serve the model (``benchmarks/latency_table.py`` writes it), and the fit that
predicts a model's latency from how many heads and neurons each layer keeps.

The table holds, at one batch size and sequence length, the latency of one attention block against
the number of heads it keeps (0 to all) and of one FFN block against the number of neurons it keeps
(a grid), each the median of repeats, and of the whole model with every block empty. Each block's
points are fitted by a piecewise-linear curve (after Kwon et al. 2022): a constant up to a threshold
number of units (below it the hardware is not the bottleneck), linearly rising above it, and the
measured value at zero units (the block is skipped). A model's predicted latency is

    empty_model_ms + sum over layers of [A(heads kept) - A(0)] + [F(neurons kept) - F(0)]

with ``A`` and ``F`` the fitted curves, so it is exact for the empty model and rises with every head
and neuron kept. No torch here: recipe validation reads tables.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: The ``schema`` value of a table this version reads.
TABLE_SCHEMA = "movprune-latency-table/1"
#: How to build a table (said in every error about one).
BUILD_HINT = "build one with: python benchmarks/latency_table.py --model MODEL --out PATH"


class BlockFit(BaseModel):
    """A block's latency against the units (heads or neurons) it keeps: ``zero_ms`` at none,
    ``constant_ms`` from 1 to ``threshold_units``, then ``slope_ms_per_unit`` more per unit."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    zero_ms: float = Field(ge=0)
    threshold_units: int = Field(ge=1)
    constant_ms: float = Field(ge=0)
    slope_ms_per_unit: float = Field(ge=0)

    def predict_ms(self, units: int) -> float:
        """Predicted latency of the block keeping ``units`` (never below the value at fewer units)."""
        if units <= 0:
            return min(self.zero_ms, self.constant_ms)
        return self.constant_ms + self.slope_ms_per_unit * max(0, units - self.threshold_units)


class BlockTable(BaseModel):
    """One block's measured points ``[units, ms]`` (0 included) and their fit."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    points: list[tuple[int, float]] = Field(min_length=2)
    fit: BlockFit
    max_abs_residual_ms: float = Field(ge=0)


class TableDims(BaseModel):
    """The shape of the model a table was measured for."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    attention_head_size: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)

    def describe(self) -> str:
        """``6 layers, 12 heads of 32, hidden 384, FFN 1536``."""
        return (f"{self.num_hidden_layers} layers, {self.num_attention_heads} heads of {self.attention_head_size}, "
                f"hidden {self.hidden_size}, FFN {self.intermediate_size}")


class LatencyTable(BaseModel):
    """A latency lookup table (see the module docstring); ``extra`` keys (the machine, the check of the
    prediction against measured models) are kept as written."""

    model_config = ConfigDict(extra="allow", frozen=True)
    schema_: Literal["movprune-latency-table/1"] = Field(alias="schema")
    model: str
    dims: TableDims
    runtime: str
    batch_size: int = Field(gt=0)
    seq_tokens: int = Field(gt=0)
    threads: int = Field(gt=0)
    empty_model_ms: float = Field(ge=0)
    attention: BlockTable
    ffn: BlockTable

    def predict_ms(self, heads_per_layer: Sequence[int], neurons_per_layer: Sequence[int]) -> float:
        """Predicted latency of a model keeping these heads and neurons in each layer."""
        a, f = self.attention.fit, self.ffn.fit
        return self.empty_model_ms + sum(a.predict_ms(h) - a.predict_ms(0) for h in heads_per_layer) \
            + sum(f.predict_ms(n) - f.predict_ms(0) for n in neurons_per_layer)

    def dense_ms(self) -> float:
        """Predicted latency of the unpruned model."""
        d = self.dims
        return self.predict_ms([d.num_attention_heads] * d.num_hidden_layers,
                               [d.intermediate_size] * d.num_hidden_layers)

    def stated_at(self) -> str:
        """``batch 32 x 128 tokens, pytorch-compact, 1 thread(s)``."""
        return f"batch {self.batch_size} x {self.seq_tokens} tokens, {self.runtime}, {self.threads} thread(s)"


class LatencyTableError(ValueError):
    """A latency table file is missing or is not a table; the message is one line."""


def load_table(path: str | Path) -> tuple[LatencyTable, str]:
    """The table at ``path`` and the sha256 of its bytes; raises :class:`LatencyTableError`."""
    path = Path(path)
    if not path.is_file():
        raise LatencyTableError(f"'{path}' not found; fix the path or {BUILD_HINT}")
    raw = path.read_bytes()
    try:
        table = LatencyTable.model_validate(json.loads(raw.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LatencyTableError(f"'{path}' is not JSON ({e}); {BUILD_HINT}") from None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the file"
        raise LatencyTableError(f"'{path}' is not a latency table ({where}: {first['msg']}); {BUILD_HINT}") from None
    return table, hashlib.sha256(raw).hexdigest()


def fit_block(points: Sequence[tuple[int, float]]) -> BlockFit:
    """The piecewise-linear fit of a block's measured ``(units, ms)`` points (``units`` 0 included).

    For every candidate threshold ``t`` (each measured unit count above 0) the constant ``c`` and the
    slope ``s`` of ``c`` up to ``t``, ``c + s (units - t)`` above, are the least squares ones over all
    the points above 0 (a regression on ``max(0, units - t)``); when that slope is negative, ``s = 0``
    and ``c`` is the mean; when the constant is negative, ``c = 0`` and ``s`` is the least squares
    slope from ``(t, 0)`` (both are the least squares fit under ``c >= 0``, ``s >= 0``). The smallest
    ``t`` makes the fit a straight line through all of them. The candidate with the least squared
    error wins (the smallest threshold on a tie)."""
    zero = [ms for units, ms in points if units == 0]
    rest = sorted((int(u), float(ms)) for u, ms in points if u > 0)
    if len(zero) != 1 or not rest:
        raise ValueError("a block's points need exactly one at 0 units and at least one above")
    n = len(rest)
    mean_ms = sum(ms for _, ms in rest) / n
    best: tuple[float, int, float, float] | None = None
    for threshold, _ in rest:
        above = [max(0, u - threshold) for u, _ in rest]
        mean_above = sum(above) / n
        den = sum((d - mean_above) ** 2 for d in above)
        slope = sum((d - mean_above) * (ms - mean_ms) for d, (_, ms) in zip(above, rest)) / den if den else 0.0
        if slope < 0:
            slope = 0.0
        constant = mean_ms - slope * mean_above
        if constant < 0:  # the best fit with c = 0: the slope through (t, 0)
            constant = 0.0
            slope = max(0.0, sum(d * ms for d, (_, ms) in zip(above, rest)) / sum(d * d for d in above))
        best = _better(best, rest, threshold, constant, slope)
    assert best is not None
    _, threshold, constant, slope = best
    return BlockFit(zero_ms=zero[0], threshold_units=threshold, constant_ms=constant, slope_ms_per_unit=slope)


def _better(best: tuple[float, int, float, float] | None, rest: list[tuple[int, float]], threshold: int,
            constant: float, slope: float) -> tuple[float, int, float, float]:
    error = sum((ms - (constant + slope * max(0, u - threshold))) ** 2 for u, ms in rest)
    if best is None or error < best[0] - 1e-12 * max(1.0, best[0]):
        return error, threshold, constant, slope
    return best


def max_abs_residual_ms(points: Sequence[tuple[int, float]], fit: BlockFit) -> float:
    """The largest ``|measured - predicted|`` over a block's points."""
    return max(abs(ms - fit.predict_ms(u)) for u, ms in points)


def block_table(points: Sequence[tuple[int, float]]) -> BlockTable:
    """Points, their fit and its largest residual."""
    fit = fit_block(points)
    return BlockTable(points=[(int(u), float(ms)) for u, ms in points], fit=fit,
                      max_abs_residual_ms=max_abs_residual_ms(points, fit))


def grid(total_units: int, step_units: int) -> list[int]:
    """0, 1, then every ``step_units`` up to ``total_units`` (always included)."""
    out = sorted({0, 1, total_units, *range(step_units, total_units, step_units)})
    return [u for u in out if u <= total_units]

