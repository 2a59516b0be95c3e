"""Every supported BERT-family encoder, as a tiny random model built from its config: pruned to 10%
remaining on the SST-2 fixture's rows, inspected (every matrix type found, nothing "other"), exported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from movprune.cli.main import app
from movprune.errors import ExportError, ModelError
from movprune.export import export_run, load_export
from movprune.models import ENCODERS, TINY_MODELS
from movprune.recipe import validate_recipe
from movprune.results import load_result
from movprune.training.loop import check_inputs, run

from conftest import tiny_recipe_dict

SEPARATE_QKV = ["Q", "K", "V", "attention output", "FFN in", "FFN out"]
EXPECTED_COLUMNS = {kind: SEPARATE_QKV for kind in ENCODERS} | {
    "modernbert": ["QKV", "attention output", "FFN in", "FFN out"]}
#: Architectures compact export handles; the others get a clear refusal.
COMPACT = {"bert", "roberta"}
TRAIN = {"max_steps": 6, "max_train_samples": 96, "max_eval_samples": 32}


def test_every_encoder_has_a_tiny_alias():
    assert set(TINY_MODELS.values()) == set(ENCODERS)


@pytest.mark.parametrize("kind", ENCODERS)
def test_encoder_is_pruned_inspected_and_exported(tmp_path, kind):
    recipe = validate_recipe(tiny_recipe_dict(tmp_path / "results", "sst2", name=kind,
                                              model=f"tiny-random-{kind}", train=TRAIN), kind)
    result = run(recipe).as_dict()
    assert result["remaining_pct"] == pytest.approx(10, abs=0.5)
    config = json.loads((Path(result["run_dir"]) / "model" / "config.json").read_text())
    assert config["model_type"] == kind and config["id2label"] == {"0": "negative", "1": "positive"}

    shown = CliRunner().invoke(app, ["inspect", result["run_dir"], "--format", "json"])
    assert shown.exit_code == 0, shown.output
    table = json.loads(shown.output)
    assert table["columns"] == EXPECTED_COLUMNS[kind]
    assert [row["layer"] for row in table["layers"]] == [0, 1]
    assert table["total_pct"] == pytest.approx(result["remaining_pct"], abs=1e-6)

    for fmt in ("dense", "sparse"):
        export_run(result["run_dir"], tmp_path / fmt, fmt, measure_kernels=False)
        assert load_export(tmp_path / fmt).config.model_type == kind
        assert "movement-pruning" in (tmp_path / fmt / "README.md").read_text()
    try:
        out = export_run(result["run_dir"], tmp_path / "compact", "compact")
    except ExportError as e:
        assert kind not in COMPACT
        assert f"this run's model is '{kind}'. Use --format sparse" in str(e)
    else:
        assert kind in COMPACT
        assert out.max_abs_diff is not None and out.max_abs_diff <= 1e-4


def test_distillation_on_another_encoder(tmp_path):
    """An automatic dense teacher and a pruned student, both DistilBERT."""
    recipe = validate_recipe(tiny_recipe_dict(tmp_path / "results", "sst2", name="distil",
                                              model="tiny-random-distilbert", train=TRAIN,
                                              distill={"teacher": "auto"}), "distil")
    result = run(recipe).as_dict()
    teacher = load_result(result["distill"]["teacher"])  # the dense run the student learned from
    assert (teacher.model, teacher.pruner, teacher.remaining_pct) == ("tiny-random-distilbert", "none", 100.0)
    assert result["distill"]["teacher_metrics"] == teacher.metrics and "accuracy" in teacher.metrics
    assert result["remaining_pct"] == pytest.approx(10, abs=0.5)


def test_unknown_encoder_is_refused_before_training(tmp_path):
    folder = tmp_path / "gpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    recipe = validate_recipe(tiny_recipe_dict(tmp_path / "results", "sst2", model=str(folder)), "r")
    with pytest.raises(ModelError, match="architecture 'gpt2' is not supported; movprune prunes the "
                                         "BERT-family encoders bert, roberta, distilbert, electra, "
                                         "deberta-v2, modernbert"):
        check_inputs(recipe)
