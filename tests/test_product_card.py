"""The product card's three commands, as written: `movprune run recipe.yaml`, `movprune sweep
--sparsity 3,10,15` (no recipe named) and `movprune compare results/`."""

from __future__ import annotations

import json

import yaml

from conftest import GLUE_DIR, run_cli, tiny_recipe_dict


def _plan_rows(stdout: str) -> list[str]:
    """The run names of a `sweep --dry-run` plan table."""
    return [line.split("│")[1].strip() for line in stdout.splitlines()
            if line.count("│") >= 3 and "-r" in line.split("│")[1]]


def test_sweep_without_a_recipe_takes_the_shipped_quickstart_and_says_so(tmp_path):
    # A first positional holding '=' is an override (here: where the data is), not a recipe.
    res = run_cli("sweep", f"data_dir={GLUE_DIR}", "--sparsity", "3,10,15", "--dry-run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    first = res.stderr.splitlines()[0]
    assert first.startswith("recipe: the shipped quickstart") and "quickstart.yaml" in first
    assert "no ./movprune.yaml here" in first
    assert _plan_rows(res.stdout) == ["soft_movement-r15-s42", "soft_movement-r10-s42", "soft_movement-r3-s42"]
    assert not (tmp_path / "results").exists()  # a dry run writes nothing


def test_sweep_without_a_recipe_prefers_movprune_yaml_in_the_current_folder(tmp_path):
    (tmp_path / "movprune.yaml").write_text(yaml.safe_dump(tiny_recipe_dict(tmp_path / "results")))
    res = run_cli("sweep", "--sparsity", "3,10,15", "--pruners", "magnitude", "--dry-run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines()[0] == "recipe: ./movprune.yaml (no recipe named; found in this folder)"
    assert _plan_rows(res.stdout) == ["magnitude-r15-s0", "magnitude-r10-s0", "magnitude-r3-s0"]

    # A named recipe is used as named, with no note.
    named = run_cli("sweep", "movprune.yaml", "seed=3", "--dry-run", cwd=tmp_path)
    assert named.returncode == 2  # the override is checked, so the recipe was read
    assert "the sweep sets seed itself" in named.stderr and "recipe:" not in named.stderr


def test_run_then_compare_results_folder_as_the_card_says(finished_run):
    # `movprune run recipe.yaml` made finished_run (conftest); compare its results/ folder by that name.
    assert finished_run.parent.name == "results"
    res = run_cli("compare", "results/", "--format", "json", cwd=finished_run.parent.parent)
    assert res.returncode == 0, res.stderr
    (table,) = json.loads(res.stdout)
    result = json.loads((finished_run / "result.json").read_text())
    (row,) = table["rows"]
    assert table["task"] == "sst2" and row["remaining_pct"] == 10
    assert row["cells"]["movement"]["metrics"]["accuracy"]["mean"] == result["metrics"]["accuracy"]
