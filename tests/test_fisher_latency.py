"""The Fisher pruner's latency budget: the piecewise-linear fit of a measured lookup table, the search
that keeps the table's predicted latency within ``pruner.latency_ms``, the one-line errors of a bad
table or budget, and a ``train.max_steps: 0`` run that records the predicted latency."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from movprune.pruners.fisher_search import Budget, LayerwiseBudget, search_counts, top_masks
from movprune.pruners.grouping import heads_and_neurons
from movprune.pruners.latency import LatencyTable, block_table, fit_block, load_table

from conftest import REPO, run_cli, tiny_recipe_dict

#: tiny-random-bert's shape (tests/test_fisher.py).
TINY_DIMS = {"num_hidden_layers": 2, "num_attention_heads": 4, "attention_head_size": 16, "hidden_size": 64,
             "intermediate_size": 256}


def _table_data(dims: dict[str, int], empty_ms: float, attention: dict[str, float], ffn: dict[str, float]) -> dict:
    def block(fit: dict[str, float], total: int) -> dict:
        return {"points": [[0, fit["zero_ms"]], [total, fit["constant_ms"]]], "fit": fit, "max_abs_residual_ms": 0.0}

    return {"schema": "movprune-latency-table/1", "model": "synthetic", "dims": dims, "runtime": "pytorch-compact",
            "batch_size": 32, "seq_tokens": 128, "threads": 1, "empty_model_ms": empty_ms,
            "attention": block(attention, dims["num_attention_heads"]), "ffn": block(ffn, dims["intermediate_size"])}


def _tiny_table(tmp_path, dims: dict[str, int] = TINY_DIMS):
    """A synthetic table for tiny-random-bert: 1 ms with every block empty, 2.21 ms unpruned."""
    data = _table_data(dims, 1.0,
                       {"zero_ms": 0.01, "threshold_units": 1, "constant_ms": 0.2, "slope_ms_per_unit": 0.05},
                       {"zero_ms": 0.01, "threshold_units": 1, "constant_ms": 0.02, "slope_ms_per_unit": 0.001})
    path = tmp_path / "latency.json"
    path.write_text(json.dumps(data))
    return path


# -- the fit -----------------------------------------------------------------------------------


def test_the_fit_recovers_a_constant_then_linear_block():
    fit = fit_block([(0, 0.5), (1, 2.0), (2, 2.0), (3, 3.0), (4, 4.0)])
    assert (fit.zero_ms, fit.threshold_units, fit.constant_ms, fit.slope_ms_per_unit) == (0.5, 2, 2.0, 1.0)
    assert [fit.predict_ms(k) for k in range(6)] == [0.5, 2.0, 2.0, 3.0, 4.0, 5.0]


def test_the_fit_of_noisy_points_is_the_hand_computed_least_squares():
    # Candidates, by hand (c and s solved together over the points above 0, on d = max(0, units - t)):
    # t=1: d = 0, 1, 2 against 3, 5, 6: s = 3/2, c = 14/3 - 3/2 = 19/6, squared error 1/6 (the line);
    # t=2: d = 0, 0, 1: s = (4/3) / (2/3) = 2, c = 14/3 - 2/3 = 4, error 2; t=3: c = 14/3, error 14/3.
    points = [(0, 1.0), (1, 3.0), (2, 5.0), (3, 6.0)]
    fit = fit_block(points)
    assert fit.threshold_units == 1 and fit.zero_ms == 1.0
    assert fit.constant_ms == pytest.approx(19 / 6) and fit.slope_ms_per_unit == pytest.approx(1.5)
    assert block_table(points).max_abs_residual_ms == pytest.approx(1 / 3)


def test_the_constant_and_slope_are_fitted_together_over_all_points():
    # By hand, y = 2, 2, 4, 4 at 1..4 units (mean 3): t=1 (the line): s = 4/5, c = 9/5, error 0.8;
    # t=2: d = 0, 0, 1, 2 (mean 3/4), sum (d - 3/4)(y - 3) = 3, sum (d - 3/4)^2 = 11/4, so s = 12/11 and
    # c = 3 - 9/11 = 24/11, residuals -2/11, -2/11, 8/11, -4/11: error 88/121 = 8/11 < 0.8, the best;
    # t=3: s = 4/3, c = 8/3, error 8/3; t=4: c = 3, error 4. A constant fitted on the points up to 2
    # alone (c = 2, then the slope through (2, 2): 6/5) leaves 0.8.
    fit = fit_block([(0, 0.5), (1, 2.0), (2, 2.0), (3, 4.0), (4, 4.0)])
    assert (fit.zero_ms, fit.threshold_units) == (0.5, 2)
    assert fit.constant_ms == pytest.approx(24 / 11) and fit.slope_ms_per_unit == pytest.approx(12 / 11)


def test_a_negative_constant_is_fitted_again_at_zero():
    # t=1 unconstrained: d = 0, 1, 2 against 0, 3, 6.5: s = 3.25, c = 19/6 - 3.25 < 0, so c = 0 and
    # s = (3 + 13) / (1 + 4) = 3.2, residuals 0, -0.2, 0.1: error 0.05; t=2: d = 0, 0, 1, s = 5,
    # c = 1.5, error 4.5; t=3: c = 19/6, error > 4. So c = 0 and s = 3.2 at one unit.
    fit = fit_block([(0, 0.0), (1, 0.0), (2, 3.0), (3, 6.5)])
    assert fit.threshold_units == 1 and fit.constant_ms == 0.0
    assert fit.slope_ms_per_unit == pytest.approx(3.2)


def test_a_flat_block_fits_a_constant_and_a_slower_empty_block_never_predicts_more():
    fit = fit_block([(0, 0.2), (1, 1.0), (8, 1.0), (16, 1.0)])
    assert (fit.threshold_units, fit.constant_ms, fit.slope_ms_per_unit) == (1, 1.0, 0.0)
    noisy_zero = fit_block([(0, 1.3), (1, 1.0), (2, 2.0)])
    assert noisy_zero.predict_ms(0) == 1.0 <= noisy_zero.predict_ms(1)


# -- the search --------------------------------------------------------------------------------

LAYERS, HEADS, NEURONS = 3, 4, 10


def _synthetic_table() -> LatencyTable:
    dims = {"num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "attention_head_size": 8, "hidden_size": 32,
            "intermediate_size": NEURONS}
    return LatencyTable.model_validate(_table_data(
        dims, 2.0, {"zero_ms": 0.1, "threshold_units": 2, "constant_ms": 1.0, "slope_ms_per_unit": 0.3},
        {"zero_ms": 0.05, "threshold_units": 3, "constant_ms": 0.5, "slope_ms_per_unit": 0.07}))


def _latency_budget(table: LatencyTable, latency_ms: float) -> LayerwiseBudget:
    return LayerwiseBudget("latency", tuple(table.attention.fit.predict_ms(k) for k in range(HEADS + 1)),
                           tuple(table.ffn.fit.predict_ms(k) for k in range(NEURONS + 1)),
                           latency_ms - table.empty_model_ms)


def _per_layer(values: torch.Tensor) -> dict[str, torch.Tensor]:
    return {f"layer{i}": row for i, row in enumerate(values)}


def _counts(importance: torch.Tensor, count: int) -> list[int]:
    return [int(m.sum()) for m in top_masks(_per_layer(importance), count).values()]


@pytest.mark.parametrize("seed,latency_ms,weights_limit", [(0, 4.0, None), (1, 5.5, None), (2, 7.3, None),
                                                          (3, 5.0, 40), (4, 6.2, 55)])
def test_the_search_meets_the_latency_budget_and_no_pair_keeps_more(seed, latency_ms, weights_limit):
    g = torch.Generator().manual_seed(seed)
    heads, neurons = torch.rand(LAYERS, HEADS, generator=g) * 4, torch.rand(LAYERS, NEURONS, generator=g)
    table = _synthetic_table()
    budgets = [_latency_budget(table, latency_ms)]
    if weights_limit is not None:
        budgets.append(Budget("weights", 5, 2, weights_limit))
    layer_of_head = torch.arange(LAYERS).repeat_interleave(HEADS)
    layer_of_neuron = torch.arange(LAYERS).repeat_interleave(NEURONS)
    found = search_counts(heads.reshape(-1), neurons.reshape(-1), budgets, head_layers=layer_of_head,
                          neuron_layers=layer_of_neuron)

    def fits(h: int, n: int) -> bool:
        within = table.predict_ms(_counts(heads, h), _counts(neurons, n)) <= latency_ms * (1 + 1e-9)
        return within and (weights_limit is None or 5 * h + 2 * n <= weights_limit)

    def importance(h: int, n: int) -> float:
        return float(heads.reshape(-1).sort(descending=True).values[:h].sum()
                     + neurons.reshape(-1).sort(descending=True).values[:n].sum())

    assert fits(found.heads, found.neurons)
    assert found.importance == pytest.approx(importance(found.heads, found.neurons))
    best = max(importance(h, n) for h, n in itertools.product(range(LAYERS * HEADS + 1), range(LAYERS * NEURONS + 1))
               if fits(h, n))
    assert found.importance == pytest.approx(best)
    # the budget is what stopped it: one more neuron no longer fits
    assert found.neurons == LAYERS * NEURONS or not fits(found.heads, found.neurons + 1)


def test_a_latency_budget_below_the_empty_model_has_no_mask():
    table = _synthetic_table()
    with pytest.raises(ValueError, match="no mask fits"):
        search_counts(torch.rand(LAYERS * HEADS), torch.rand(LAYERS * NEURONS), [_latency_budget(table, 1.9)],
                      head_layers=torch.arange(LAYERS).repeat_interleave(HEADS),
                      neuron_layers=torch.arange(LAYERS).repeat_interleave(NEURONS))


# -- through the CLI ---------------------------------------------------------------------------


def _fisher(**keys) -> dict:
    return {"method": "fisher", "remaining_pct": 100, "calibration_samples": 32, **keys}


def test_a_zero_step_run_with_a_latency_budget_records_the_predicted_latency(write_recipe, tmp_path):
    path = _tiny_table(tmp_path)
    table = LatencyTable.model_validate_json(path.read_text())
    recipe = write_recipe(train={"max_steps": 0}, pruner=_fisher(latency_table=str(path), latency_ms=1.6))
    out = run_cli("run", str(recipe))
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "results" / "tiny-sst2" / "result.json").read_text())["pruner_summary"]
    heads, neurons = list(summary["heads_kept"].values()), list(summary["neurons_kept"].values())
    predicted = table.predict_ms(heads, neurons)
    assert summary["latency_predicted_ms"] == pytest.approx(predicted, abs=1e-4) and predicted <= 1.6
    # remaining_pct 100 leaves the latency the binding budget: it is nearly used up (a neuron costs 1 µs)
    assert 1.6 - predicted < 0.05 and sum(neurons) < 2 * 256
    assert summary["latency_dense_predicted_ms"] == pytest.approx(2.21)
    assert summary["latency_budget_ms"] == 1.6 and summary["latency_table"] == str(path)
    assert summary["latency_table_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (summary["latency_runtime"], summary["latency_batch_size"], summary["latency_seq_tokens"],
            summary["latency_threads"]) == ("pytorch-compact", 32, 128, 1)


def test_a_table_without_a_budget_only_records_the_prediction(write_recipe, tmp_path):
    path = _tiny_table(tmp_path)
    table = LatencyTable.model_validate_json(path.read_text())
    recipe = write_recipe(train={"max_steps": 0}, pruner=_fisher(latency_table=str(path), remaining_pct=50))
    assert run_cli("run", str(recipe)).returncode == 0
    summary = json.loads((tmp_path / "results" / "tiny-sst2" / "result.json").read_text())["pruner_summary"]
    assert summary["latency_budget_ms"] is None
    assert summary["latency_predicted_ms"] == pytest.approx(
        table.predict_ms(list(summary["heads_kept"].values()), list(summary["neurons_kept"].values())), abs=1e-4)


def _one_line_error(out, *words: str) -> None:
    assert out.returncode == 2, out.stderr
    # a run prints its progress on stderr too ("preparing data…"): the error itself is one line
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in out.stderr and len(errors) == 1, out.stderr
    for word in words:
        assert word in out.stderr, out.stderr


def test_a_latency_budget_without_a_table_is_a_one_line_error(write_recipe):
    recipe = write_recipe(train={"max_steps": 0}, pruner=_fisher(latency_ms=20))
    _one_line_error(run_cli("run", str(recipe), "--dry-run"), "pruner.latency_ms: 20 ms", "pruner.latency_table=PATH",
                    "benchmarks/latency_table.py")


def test_a_missing_or_unreadable_table_is_a_one_line_error(write_recipe, tmp_path):
    missing = str(tmp_path / "nope.json")
    recipe = write_recipe(train={"max_steps": 0}, pruner=_fisher(latency_table=missing, latency_ms=2))
    _one_line_error(run_cli("run", str(recipe), "--dry-run"), "pruner.latency_table", "nope.json' not found",
                    "benchmarks/latency_table.py")
    (tmp_path / "bad.json").write_text(json.dumps({"schema": "movprune-latency-table/1", "model": "x"}))
    recipe = write_recipe(train={"max_steps": 0}, pruner=_fisher(latency_table=str(tmp_path / "bad.json")))
    _one_line_error(run_cli("run", str(recipe), "--dry-run"), "pruner.latency_table", "is not a latency table")


def test_a_budget_below_the_smallest_model_is_a_one_line_error(write_recipe, tmp_path):
    recipe = write_recipe(train={"max_steps": 0}, pruner=_fisher(latency_table=str(_tiny_table(tmp_path)),
                                                                  latency_ms=0.5))
    _one_line_error(run_cli("run", str(recipe), "--dry-run"), "pruner.latency_ms: 0.5 ms is below the 1 ms",
                    "at least 1", "2.21 ms")


def test_a_table_of_another_model_shape_is_a_one_line_error(write_recipe, tmp_path):
    minilm = {"num_hidden_layers": 6, "num_attention_heads": 12, "attention_head_size": 32, "hidden_size": 384,
              "intermediate_size": 1536}
    recipe = write_recipe(train={"max_steps": 0}, pruner=_fisher(latency_table=str(_tiny_table(tmp_path, minilm)),
                                                                  latency_ms=2))
    # checked with the run's inputs, before the data is prepared: --dry-run catches it
    _one_line_error(run_cli("run", str(recipe), "--dry-run"),
                    "pruner.latency_table: measured for a model of 6 layers, 12 heads of 32",
                    "this model has 2 layers, 4 heads of 16, hidden 64, FFN 256", "--model MODEL")


def test_a_finished_runs_table_is_not_read_again(write_recipe, tmp_path):
    path = _tiny_table(tmp_path)
    recipe = write_recipe(train={"max_steps": 0}, pruner=_fisher(latency_table=str(path), latency_ms=1.6))
    assert run_cli("run", str(recipe)).returncode == 0
    run_dir = tmp_path / "results" / "tiny-sst2"
    path.unlink()  # the table moved (or the command runs from another folder)
    resumed = run_cli("run", str(recipe), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    exported = run_cli("export", str(run_dir), "--to", str(tmp_path / "compact"), "--format", "compact", "--eval",
                       "--no-latency")
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "compact" / "movprune_export.json").is_file()
    # a run that would train still needs it
    _one_line_error(run_cli("run", str(recipe), "--force", "--dry-run"), "pruner.latency_table",
                    "latency.json' not found")


def test_a_latency_budgeted_run_is_compared_at_the_weights_it_kept(write_recipe, tmp_path):
    path = _tiny_table(tmp_path)
    # no remaining_pct: the latency budget is the only one
    recipe = write_recipe(train={"max_steps": 0}, pruner=_fisher(latency_table=str(path), latency_ms=1.6,
                                                                 remaining_pct=None))
    assert run_cli("run", str(recipe)).returncode == 0
    result = json.loads((tmp_path / "results" / "tiny-sst2" / "result.json").read_text())
    assert result["target_remaining_pct"] is None and result["remaining_pct"] < 90
    out = run_cli("compare", str(tmp_path / "results"), "--format", "json")
    assert out.returncode == 0, out.stderr
    (table,) = json.loads(out.stdout)
    (row,) = table["rows"]
    assert row["remaining_pct"] == round(result["remaining_pct"], 1) and "dense" not in row["label"]
    # remaining_pct 100 with a latency budget is the same run: no target either
    recipe = write_recipe(train={"max_steps": 0}, name="full", filename="full.yaml",
                          pruner=_fisher(latency_table=str(path), latency_ms=1.6))
    assert run_cli("run", str(recipe)).returncode == 0
    full = json.loads((tmp_path / "results" / "full" / "result.json").read_text())
    assert full["target_remaining_pct"] is None and full["remaining_pct"] == result["remaining_pct"]


@pytest.mark.parametrize("runtime", ["pytorch-compact", "onnx-compact"])
def test_the_benchmark_writes_a_table_the_pruner_reads(tmp_path, runtime):
    if runtime == "onnx-compact":
        pytest.importorskip("onnxruntime")
    out = tmp_path / "table.json"
    done = subprocess.run([sys.executable, "benchmarks/latency_table.py", "--model", "tiny-random-bert", "--batch-size",
                           "2", "--seq-tokens", "8", "--neuron-step", "100", "--repeats", "3", "--check", "1",
                           "--runtime", runtime, "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    table, _ = load_table(out)
    assert table.dims.model_dump() == TINY_DIMS and (table.batch_size, table.seq_tokens) == (2, 8)
    assert table.runtime == runtime
    assert [u for u, _ in table.attention.points] == [0, 1, 2, 3, 4]
    assert [u for u, _ in table.ffn.points] == [0, 1, 100, 200, 256]
    assert [row["model"] for row in report["wall"]["check"]] == ["dense", "half", "random-0"]
    assert report["wall"]["dense_predicted_ms"] == pytest.approx(table.dense_ms(), abs=1e-3)
    assert set(report) >= {"cpu", "wall", "load_average_at_start", "threads"}
    # the table's load at the start is the report's, taken before the timing
    assert json.loads(out.read_text())["load_average_at_start"] == report["load_average_at_start"]
    if runtime != "pytorch-compact":
        return
    # the table drives a run: the predicted latency recorded is the table's for what the saved model keeps
    budget = (table.empty_model_ms + table.dense_ms()) / 2
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(tmp_path / "results", train={"max_steps": 0},
                                                      pruner=_fisher(latency_table=str(out), latency_ms=budget))))
    done = run_cli("run", str(recipe))
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "results" / "tiny-sst2"
    summary = json.loads((run_dir / "result.json").read_text())["pruner_summary"]
    weights = load_file(run_dir / "model" / "model.safetensors")
    left = heads_and_neurons({k[:-7]: v for k, v in weights.items() if k.endswith(".weight") and v.dim() == 2
                              and "encoder" in k}, TINY_DIMS["num_attention_heads"])
    heads, neurons = [e["heads_left"] for e in left.values()], [e["neurons_left"] for e in left.values()]
    # a timed table may come out flat (noise): then the budget is the dense model's, and all of it fits
    assert len(heads) == 2 and (sum(heads) + sum(neurons) < 2 * (4 + 256) or table.dense_ms() <= budget), \
        (heads, neurons, table.model_dump())
    fa, ff = table.attention.fit, table.ffn.fit
    by_hand = table.empty_model_ms + sum(fa.constant_ms + fa.slope_ms_per_unit * max(0, h - fa.threshold_units)
                                         - min(fa.zero_ms, fa.constant_ms) if h else 0.0 for h in heads) \
        + sum(ff.constant_ms + ff.slope_ms_per_unit * max(0, n - ff.threshold_units)
              - min(ff.zero_ms, ff.constant_ms) if n else 0.0 for n in neurons)
    assert summary["latency_predicted_ms"] == pytest.approx(by_hand, abs=1e-4), (heads, neurons, summary)
    assert by_hand <= budget + 1e-9
    assert summary["latency_table_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def test_a_sweeps_finished_latency_run_is_skipped_after_the_table_moved(write_recipe, tmp_path):
    path = _tiny_table(tmp_path)
    recipe = write_recipe(train={"max_steps": 0}, pruner=_fisher(latency_table=str(path), latency_ms=1.6))
    first = run_cli("sweep", str(recipe), "--sparsity", "100", "--pruners", "fisher")
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "results" / "tiny-sst2" / "fisher-r100-s0" / "result.json").is_file()
    path.unlink()
    again = run_cli("sweep", str(recipe), "--sparsity", "100", "--pruners", "fisher")
    assert again.returncode == 0, again.stderr
    assert "skipped" in again.stdout
    # a level still to train needs the table
    _one_line_error(run_cli("sweep", str(recipe), "--sparsity", "100,50", "--pruners", "fisher"),
                    "pruner.latency_table", "latency.json' not found")
