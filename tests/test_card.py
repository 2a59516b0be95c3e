"""Every export carries a Hugging Face model card stating the method, the budget, the measured
remaining %, the metrics and the recipe; --push-to-hub fails offline in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from movprune.cli.main import app
from movprune.recipe import validate_recipe
from movprune.training.loop import run

from conftest import tiny_recipe_dict


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("card")
    recipe = validate_recipe(tiny_recipe_dict(tmp / "results", "mrpc", name="card-run", train={
        "max_steps": 6, "max_train_samples": 64, "max_eval_samples": 32}), "card")
    return run(recipe).as_dict()


def test_export_writes_a_model_card_from_the_run(finished_run, tmp_path):
    from huggingface_hub import ModelCard

    to = tmp_path / "export"
    result = CliRunner().invoke(app, ["export", finished_run["run_dir"], "--to", str(to), "--format", "sparse",
                                      "--no-latency"])
    assert result.exit_code == 0, result.output
    card = ModelCard.load(to / "README.md")
    meta = card.data.to_dict()
    assert meta["datasets"] == ["nyu-mll/glue"] and "base_model" not in meta  # a random init has none
    assert meta["tags"][:3] == ["pruning", "movement-pruning", "movprune"]
    assert meta["metrics"] == ["accuracy", "f1"] and meta["pipeline_tag"] == "text-classification"
    evals = {e.metric_type: e for e in card.data.eval_results}
    for name, value in finished_run["metrics"].items():
        assert evals[name].metric_value == pytest.approx(round(value, 2))
        assert (evals[name].dataset_type, evals[name].dataset_config, evals[name].dataset_split) == (
            "nyu-mll/glue", "mrpc", "validation")
        assert f"| {name} | {value:.2f} |" in card.text
    assert "| pruning method | movement |" in card.text
    assert "| budget (target remaining encoder weights) | 10.00% |" in card.text
    assert f"| remaining encoder weights (measured) | {finished_run['remaining_pct']:.2f}% |" in card.text
    assert "load_sparse" in card.text
    recipe_text = (Path(finished_run["run_dir"]) / "recipe.yaml").read_text()
    assert yaml.safe_load(card.text.split("```yaml\n", 1)[1].split("```", 1)[0]) == yaml.safe_load(recipe_text)
    assert json.loads((to / "movprune_export.json").read_text())["format"] == "sparse"


def test_push_to_hub_offline_is_a_one_line_error(finished_run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    to = tmp_path / "export"
    result = CliRunner().invoke(app, ["export", finished_run["run_dir"], "--to", str(to), "--format", "dense",
                                      "--no-latency", "--push-to-hub", "someone/pruned-mrpc"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--push-to-hub someone/pruned-mrpc: upload failed" in errors[0], result.output
    assert "Traceback" not in result.output
    # The export itself was written, its card loading from the repository it was meant for.
    assert 'from_pretrained("someone/pruned-mrpc")' in (to / "README.md").read_text()
