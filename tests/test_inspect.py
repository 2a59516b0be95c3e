"""``movprune inspect``: remaining % per layer and matrix type, from result.json or the saved model."""

from __future__ import annotations

import json

import pytest

from movprune.experiments.inspect import OTHER, breakdown, inspect_run, layer_index, matrix_type

from conftest import run_cli

BERT = "bert.encoder.layer.{}.{}"


@pytest.mark.parametrize("name, kind", [
    (BERT.format(3, "attention.self.query"), "Q"),
    (BERT.format(3, "attention.self.key"), "K"),
    (BERT.format(3, "attention.self.value"), "V"),
    (BERT.format(3, "attention.output.dense"), "attention output"),
    (BERT.format(3, "intermediate.dense"), "FFN in"),
    (BERT.format(3, "output.dense"), "FFN out"),
    ("distilbert.transformer.layer.0.attention.q_lin", "Q"),
    ("distilbert.transformer.layer.0.ffn.lin2", "FFN out"),
    ("model.layers.2.self_attn.v_proj", "V"),
    ("encoder.layer.1.mystery.proj", OTHER),
])
def test_matrix_type(name, kind):
    assert matrix_type(name) == kind


def test_layer_index():
    assert layer_index(BERT.format(11, "output.dense")) == 11
    assert layer_index("model.layers.2.self_attn.v_proj") == 2
    assert layer_index("encoder.extra.dense") is None


def test_breakdown_weights_totals_by_matrix_size():
    pct = {BERT.format(0, "attention.self.query"): 50.0, BERT.format(0, "intermediate.dense"): 10.0,
           BERT.format(1, "attention.self.query"): 0.0, BERT.format(1, "intermediate.dense"): 20.0,
           "bert.encoder.adapter.dense": 100.0}
    sizes = {n: (100 if "query" in n else 400) for n in pct}
    sizes["bert.encoder.adapter.dense"] = 100
    b = breakdown(pct, sizes)
    assert b.columns == ["Q", "FFN in", OTHER] and b.weighted
    assert list(b.cells) == [0, 1, None]  # layers in order, unnumbered modules last
    assert b.cells[0] == {"Q": 50.0, "FFN in": 10.0}
    assert b.layer_totals[0] == pytest.approx((50 * 100 + 10 * 400) / 500)  # 18, not the plain mean 30
    assert b.column_totals["FFN in"] == pytest.approx(15.0)
    assert b.total == pytest.approx((50 * 100 + 10 * 400 + 0 + 20 * 400 + 100 * 100) / 1100)
    unweighted = breakdown(pct)  # sizes unknown: plain means, and it says so
    assert not unweighted.weighted and unweighted.layer_totals[0] == pytest.approx(30.0)


def test_inspect_cli_from_result_and_from_the_saved_model(finished_run_copy):
    run_dir = finished_run_copy  # global scope: the matrices' densities differ
    result = json.loads((run_dir / "result.json").read_text())

    b = inspect_run(run_dir)
    assert b.source == "result.json" and b.weighted
    assert b.columns == ["Q", "K", "V", "attention output", "FFN in", "FFN out"]
    assert list(b.cells) == [0, 1]
    assert b.total == pytest.approx(result["remaining_pct"], abs=1e-6)  # size-weighted = measured
    q0 = result["remaining_by_module"]["bert.encoder.layer.0.attention.self.query"]
    assert b.cells[0]["Q"] == pytest.approx(q0)

    proc = run_cli("inspect", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    for text in ("FFN in", "attention output", "layer total", f"{result['remaining_pct']:.2f}", f"{q0:.1f}"):
        assert text in proc.stdout

    # Without remaining_by_module, inspect counts the saved model's weights and finds the same.
    del result["remaining_by_module"]
    (run_dir / "result.json").write_text(json.dumps(result))
    fallback = inspect_run(run_dir)
    assert fallback.source == "model/"
    assert fallback.total == pytest.approx(b.total, abs=1e-6)
    for layer, cells in b.cells.items():
        assert fallback.cells[layer] == pytest.approx(cells)


def test_inspect_reports_a_missing_run_in_one_line(tmp_path):
    proc = run_cli("inspect", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert "no such run folder" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = run_cli("inspect", str(tmp_path / "empty"))
    assert proc.returncode == 2 and "is the run finished?" in proc.stderr
