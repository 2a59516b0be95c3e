"""Task families on your own files: the same real rows as CSV / JSON Lines / Parquet give the same
metrics as the built-in presets, label names travel into the model, and mistakes are one-line errors
before training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from movprune.cli.main import app
from movprune.errors import RecipeError
from movprune.recipe import validate_recipe
from movprune.tasks import get_task
from movprune.tasks.config import DatasetConfig
from movprune.tasks.glue import SPECS, read_glue_tsv
from movprune.tasks.squad import read_squad_json
from movprune.training.loop import check_inputs, run

from conftest import GLUE_DIR, TINY_SQUAD_DIR, tiny_recipe_dict

N_TRAIN, N_EVAL = 64, 32
TRAIN = {"max_steps": 4, "batch_size": 16, "max_train_samples": N_TRAIN, "max_eval_samples": N_EVAL}


def _glue_rows(task: str, split: str, n: int):
    file = "train.tsv" if split == "train" else "dev.tsv"
    return read_glue_tsv(GLUE_DIR / SPECS[task].folder / file, SPECS[task]).select(range(n))


def _run(tmp_path: Path, name: str, task: str, **sections) -> dict:
    """A tiny run; presets read the real GLUE files, the same rows the family's files were cut from."""
    sections.setdefault("data_dir", str(GLUE_DIR))
    data = tiny_recipe_dict(tmp_path / "results", task, name=name, **sections)
    return run(validate_recipe(data, name)).as_dict()


def _losses(result: dict) -> list[float]:
    lines = (Path(result["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


def _same_metrics(family: dict, preset: dict) -> None:
    """Same metrics, and the same training: identical losses at every logged step."""
    assert family["metrics"].keys() == preset["metrics"].keys()
    for k, v in preset["metrics"].items():
        assert family["metrics"][k] == pytest.approx(v, abs=1e-9), k
    assert _losses(family) and _losses(family) == pytest.approx(_losses(preset), rel=1e-6)


def test_text_classification_csv_with_string_labels_matches_sst2(tmp_path):
    names = ["negative", "positive"]
    for split, n in (("train", N_TRAIN), ("validation", N_EVAL)):
        rows = _glue_rows("sst2", split, n)
        rows.map(lambda r: {"sentiment": names[r["label"]]}).remove_columns("label") \
            .to_csv(tmp_path / f"{split}.csv", index=False)
    dataset = {"files": {"train": str(tmp_path / "train.csv"), "validation": str(tmp_path / "validation.csv")},
               "text_columns": ["sentence"], "label_column": "sentiment"}
    family = _run(tmp_path, "csv", "text_classification", dataset=dataset, train=TRAIN)
    preset = _run(tmp_path, "sst2", "sst2", train=TRAIN)
    _same_metrics(family, preset)
    # Label names travel: both saved configs name the classes, and pipeline() answers with them.
    for result in (family, preset):
        config = json.loads((Path(result["run_dir"]) / "model" / "config.json").read_text())
        assert config["id2label"] == {"0": "negative", "1": "positive"}
        assert config["label2id"] == {"negative": 0, "positive": 1}
    from transformers import pipeline

    from movprune.export import export_run

    export_run(family["run_dir"], tmp_path / "export", "dense")
    answers = pipeline("text-classification", model=str(tmp_path / "export"))(["a gorgeous film", "dull"])
    assert {a["label"] for a in answers} <= set(names)


def test_text_classification_jsonl_pair_with_int_labels_matches_mrpc(tmp_path):
    for split, n in (("train", N_TRAIN), ("validation", N_EVAL)):
        _glue_rows("mrpc", split, n).to_json(tmp_path / f"{split}.jsonl", lines=True)
    dataset = {"files": {"train": "train.jsonl", "validation": "validation.jsonl"},
               "text_columns": ["sentence1", "sentence2"], "metrics": ["accuracy", "f1"]}
    # Relative file names are read from data_dir.
    family = _run(tmp_path, "jsonl", "text_classification", dataset=dataset, data_dir=str(tmp_path),
                  train=TRAIN)
    preset = _run(tmp_path, "mrpc", "mrpc", train=TRAIN)
    _same_metrics(family, preset)
    assert family["metric_names"] == ["accuracy", "f1"]


def test_regression_parquet_matches_stsb(tmp_path):
    for split, n in (("train", N_TRAIN), ("validation", N_EVAL)):
        _glue_rows("stsb", split, n).rename_column("label", "score").to_parquet(tmp_path / f"{split}.parquet")
    dataset = {"files": {"train": str(tmp_path / "train.parquet"), "validation": str(tmp_path / "validation.parquet")},
               "text_columns": ["sentence1", "sentence2"], "label_column": "score"}
    family = _run(tmp_path, "parquet", "regression", dataset=dataset, train=TRAIN)
    preset = _run(tmp_path, "stsb", "stsb", train=TRAIN)
    _same_metrics(family, preset)
    assert set(family["metrics"]) == {"pearson", "spearmanr"}


def test_extractive_qa_jsonl_matches_squad(tmp_path):
    dev = read_squad_json(TINY_SQUAD_DIR / "dev-v1.1.json")  # the dev file's first 180 questions
    # Own column names (question -> q); the title column is optional.
    dev.select(range(48)).rename_column("question", "q").to_json(tmp_path / "train.jsonl", lines=True)
    dev.select(range(48, 64)).remove_columns("title").rename_column("question", "q") \
        .to_json(tmp_path / "validation.jsonl", lines=True)
    train = {**TRAIN, "max_seq_length": 96, "doc_stride": 32, "max_train_samples": None,
             "max_eval_samples": None}
    dataset = {"files": {"train": str(tmp_path / "train.jsonl"), "validation": str(tmp_path / "validation.jsonl")},
               "question_column": "q"}
    family = _run(tmp_path, "qa", "extractive_qa", dataset=dataset, train=train)
    preset = _run(tmp_path, "squad", "squad", data_dir=str(TINY_SQUAD_DIR), train_split="validation[:48]",
                  eval_split="validation[48:64]", train=train)
    _same_metrics(family, preset)
    predictions = json.loads((Path(family["run_dir"]) / "predictions.json").read_text())
    assert list(predictions) == dev["id"][48:64]


def _cli_errors(tmp_path: Path, recipe: dict) -> list[str]:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert not (Path(recipe["output_dir"]) / recipe["name"]).exists()  # nothing trained
    return [line for line in result.output.splitlines() if line.startswith("error:")]


@pytest.fixture
def sst2_csv(tmp_path) -> dict:
    rows = _glue_rows("sst2", "train", 40)
    rows.map(lambda r: {"sentiment": ["negative", "positive"][r["label"]]}).to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "dev.csv").write_text("sentence,sentiment\nfine,positive\nawful,neutral\n")
    return {"files": {"train": str(tmp_path / "train.csv"), "validation": str(tmp_path / "dev.csv")},
            "text_columns": ["sentence"], "label_column": "sentiment"}


@pytest.mark.parametrize("change, message", [
    ({"text_columns": ["sentense"]}, "dataset.text_columns[0]: no column 'sentense' in {tmp}/train.csv "
                                     "(columns: sentence, label, sentiment)"),
    ({"label_column": "label", "files": None}, "dataset: give either files"),
    ({}, "dataset: label neutral in split 'validation' ({tmp}/dev.csv line 3) not among the classes of the "
         "train split (negative, positive); fix the data or give dataset.label_names"),
    ({"metrics": ["f1", "pearson"]}, "dataset.metrics: 'pearson' is not a text_classification metric"),
])
def test_mistakes_are_one_line_errors_before_training(tmp_path, sst2_csv, change, message):
    recipe = tiny_recipe_dict(tmp_path / "results", "text_classification", dataset={**sst2_csv, **change})
    lines = _cli_errors(tmp_path, recipe)
    assert any(message.format(tmp=tmp_path) in line for line in lines), lines


def test_unsupported_file_type_and_misplaced_blocks(tmp_path, sst2_csv):
    (tmp_path / "train.xlsx").write_text("x")
    bad = {**sst2_csv, "files": {"train": str(tmp_path / "train.xlsx"), "validation": sst2_csv["files"]["validation"]}}
    with pytest.raises(RecipeError, match=r"dataset.files.train: .*train.xlsx: file type '.xlsx' is not "
                                          r"supported \(use one of .csv, .tsv, .json, .jsonl, .parquet\)"):
        validate_recipe(tiny_recipe_dict(tmp_path, "text_classification", dataset=bad), "r")
    with pytest.raises(RecipeError, match="the built-in task 'sst2' reads its own data.*use task: "
                                          "text_classification"):
        validate_recipe(tiny_recipe_dict(tmp_path, "sst2", dataset=sst2_csv), "r")
    with pytest.raises(RecipeError, match="task regression: needs a dataset: block"):
        validate_recipe(tiny_recipe_dict(tmp_path, "regression"), "r")
    with pytest.raises(RecipeError, match="dataset.label_names: does not apply to task regression"):
        validate_recipe(tiny_recipe_dict(tmp_path, "regression", dataset={**sst2_csv, "label_names": ["a", "b"]}), "r")
    # Given label names fix the ids (and admit a class train lacks); a label outside them is refused.
    named = {**sst2_csv, "label_names": ["positive", "negative", "neutral"], "metrics": ["f1_macro"]}
    check_inputs(validate_recipe(tiny_recipe_dict(tmp_path, "text_classification", dataset=named), "r"))
    task = get_task("text_classification", DatasetConfig(**named))
    assert task.load_split(None, "validation")["label"] == [0, 2]
    named["label_names"] = ["positive", "negative"]
    with pytest.raises(RecipeError, match="label neutral in split 'validation' .* not among the classes "
                                          "of dataset.label_names"):
        check_inputs(validate_recipe(tiny_recipe_dict(tmp_path, "text_classification", dataset=named), "r"))
    # Binary metrics need two classes.
    three = {**sst2_csv, "label_names": ["positive", "negative", "neutral"], "metrics": ["accuracy", "f1"]}
    with pytest.raises(RecipeError, match="dataset.metrics: f1 is defined for two classes only; the data has 3"):
        check_inputs(validate_recipe(tiny_recipe_dict(tmp_path, "text_classification", dataset=three), "r"))


def test_sweep_distill_and_compare_work_on_a_family(tmp_path, sst2_csv):
    """A sweep of two pruners with an automatic teacher on CSV files, then compare over it."""
    recipe = tiny_recipe_dict(tmp_path / "results", "text_classification", name=None, dataset=sst2_csv,
                              train={"max_steps": 4, "max_eval_samples": None}, distill={"teacher": "auto"})
    recipe["dataset"]["files"]["validation"] = recipe["dataset"]["files"]["train"]
    recipe["eval_split"] = "validation[30:]"
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(recipe))
    runner = CliRunner()
    swept = runner.invoke(app, ["sweep", str(path), "--sparsity", "10", "--pruners", "magnitude,movement",
                                "--seeds", "0"])
    assert swept.exit_code == 0, swept.output
    compared = runner.invoke(app, ["compare", str(tmp_path / "results"), "--format", "json"])
    assert compared.exit_code == 0, compared.output
    (table,) = json.loads(compared.output[compared.output.index("["):])
    assert table["task"] == "text_classification" and table["headline_metric"] == "accuracy"
    assert table["pruners"] == ["magnitude", "movement"]
    assert set(table["rows"][0]["cells"]) == {"magnitude", "movement"}
    for result in map(json.loads, (tmp_path / "results").glob("*/result.json")):
        assert result["distill"]["teacher_kind"] == "auto" and "accuracy" in result["metrics"]
