"""Data that would be read wrongly, interruptions outside one run, messages that lose text.

The rule every case follows: what the data says is either used as the user meant it, or refused
before training with one line naming the file, the row or key, and the fix (exit 2).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import run_cli

T_CSV = 'text,label\n"good",pos\n"bad",neg\n"fine",pos\n"awful",neg\n'


def own_recipe(tmp: Path, files: dict[str, str], *, task: str = "text_classification", name: str = "own",
               dataset: dict | None = None, **train) -> Path:
    """Write each of ``files`` (name -> content) into ``tmp`` and a tiny recipe reading them."""
    for fname, content in files.items():
        (tmp / fname).write_text(content)
    splits = {"train": next(iter(files)), "validation": list(files)[-1]}
    data = {"files": {k: str(tmp / v) for k, v in splits.items()}, **(dataset or {})}
    if task != "extractive_qa":
        data.setdefault("text_columns", ["text"])
    recipe = {"name": name, "task": task, "dataset": data, "model": "tiny-random-bert", "seed": 0,
              "output_dir": str(tmp / "results"), "pruner": {"method": "magnitude", "remaining_pct": 10},
              "train": {"max_steps": 2, "batch_size": 2, "max_seq_length": 32, "log_every_steps": 1, **train}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def one_error_line(proc, fragment: str) -> str:
    """Exit 2, exactly one ``error:`` line, holding ``fragment``; no traceback. Returns the line."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr[-3000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert fragment in errors[0], errors[0]
    assert "Traceback" not in proc.stderr
    return errors[0]


# -- messages keep their text ----------------------------------------------------------------------


def test_error_text_in_brackets_is_printed_as_written(tmp_path):
    """Rich markup is never applied to message text: ``[x]`` stays, ``[/b]`` is no MarkupError."""
    path = own_recipe(tmp_path, {"t.csv": T_CSV})
    proc = run_cli("run", str(path), "--dry-run", "name=a[/b]")
    line = one_error_line(proc, "name")
    assert "a[/b]" in line


def test_error_and_interrupted_lines_keep_brackets(capsys):
    import typer

    from movprune.cli.common import reported_errors
    from movprune.errors import DataError, RunInterrupted

    with pytest.raises(typer.Exit):
        with reported_errors():
            raise DataError("train.report_to: wandb is not installed; pip install 'movprune[wandb]'")
    assert "pip install 'movprune[wandb]'" in capsys.readouterr().err
    with pytest.raises(typer.Exit):
        with reported_errors(resume_command="movprune run r.yaml 'train.report_to=[tensorboard]' --resume"):
            raise RunInterrupted("stopped at step 3", exit_code=143, checkpoint=None)
    assert "'train.report_to=[tensorboard]' --resume" in capsys.readouterr().err


# -- saved recipes load again ----------------------------------------------------------------------


def test_own_data_run_reruns_from_its_saved_recipe(tmp_path):
    path = own_recipe(tmp_path, {"t.csv": T_CSV})
    assert run_cli("run", str(path)).returncode == 0
    saved = tmp_path / "results" / "own" / "recipe.yaml"
    dataset = yaml.safe_load(saved.read_text())["dataset"]
    assert "question_column" not in dataset and "answers_column" not in dataset
    assert dataset["text_columns"] == ["text"] and dataset["label_column"] == "label"
    proc = run_cli("run", str(saved), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    # A sweep of the same file, twice: the second finds the first's runs finished and skips them.
    for _ in range(2):
        proc = run_cli("sweep", str(path), "--seeds", "1", "--sparsity", "10")
        assert proc.returncode == 0, proc.stderr[-3000:]


def test_recipe_files_listing_every_dataset_key_still_load(tmp_path):
    """Files saved before the recipe kept only the family's keys wrote all of them at their defaults."""
    from movprune.recipe import load_recipe

    path = own_recipe(tmp_path, {"t.csv": T_CSV}, dataset={
        "question_column": "question", "context_column": "context", "answers_column": "answers",
        "id_column": "id", "label_names": None})
    assert load_recipe(path).dataset.text_columns == ["text"]
    path = own_recipe(tmp_path, {"t.csv": T_CSV}, dataset={"question_column": "q"})
    with pytest.raises(Exception, match="dataset.question_column: does not apply to task text_classification"):
        load_recipe(path)
